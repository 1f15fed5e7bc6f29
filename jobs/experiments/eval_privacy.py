"""Privacy judged by attackers that were never in the loop (``make eval-privacy``, issue 23):
every mode (fixed t, ``--privacy-target`` with the old dlib-only loop and with the default
dlib + structure ensemble, ``--identity k-same``; a named list, ``--modes`` picks) against the
attacker suite of ``metrics.attack_suite``, with the privacy/utility frontier.

    python jobs/experiments/eval_privacy.py --data ../shared/datasets/orl_faces --model eval_out/orl_faces_model \\
        --out eval_out/privacy

Probes: the held-out photos of each person (photos 6-10, the "test" split), anonymized by each
mode. Gallery: photos 1-5 (what the face model was trained on), held by the attacker clear,
and anonymized by the attacker's own "parrot" run of the same mode (another seed). Attackers
per mode: naive (dlib, Eigenfaces, softmax regression, CNN on the clear gallery), parrot
(dlib, Eigenfaces against the anonymized gallery), SEBA-style (softmax, CNN trained on the
anonymized gallery), reversal (a restorer trained on anonymized -> clear gallery pairs, then
dlib and Eigenfaces on the restored probes) and linkability AUC (dlib, Eigenfaces). Each row
has its chance level (rank-k: k / people). Utility per mode: PSNR/SSIM to the source, MTCNN
detection on outputs upscaled to 160 px as a share of the sources' rate, FID/KID where the
Inception weights file exists (else one line says why not).

``--scenes``: the same attackers on faces in scenes (region mode): each probe and gallery photo
pasted at 64-128 px onto a real background, one per scene (``wild_scenes.photo_scenes``, the
person as ``cls``, PNG, the true rectangle kept aside); modes ``faces t=T`` (``--region faces
--detector mtcnn``) and ``k-same faces t=T`` (plus ``--identity k-same --k K --identity-field
cls``), images without a detected face published unchanged (``--no-face keep``: a missed face is
published clear). Probes: each published scene cut at its true rectangle and framed as whole
images are (short side to the model's resolution, centre square), so a missed face is a clear
probe; the parrot runs the same command over the gallery scenes (built with the attacker's own
seed) and is cut the same way; the naive attackers' clear gallery is photos 1-5 as above. Facts
per mode: faces missed by the detector, and output pixels outside the faces' windows that
differ from the source (0 for PNG inputs).

Writes OUT/attacks.parquet (one row per mode and attacker), OUT/attacks/<mode>.json (per mode:
a rerun skips modes already attacked; jobs skip finished runs), OUT/timings.json and
OUT/report.html (frontier plots and the tables).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.execution.drivers.privacy_modes import (FIXED_T, K_SAME_K, K_SAME_T, SCENE_T, mode_configs,
                                                     scene_mode_configs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder of one subfolder per person (ORL)")
    ap.add_argument("--model", required=True, help="the face model (trained on the gallery split)")
    ap.add_argument("--out", default="eval_out/privacy")
    ap.add_argument("--fixed-t", type=float, nargs="*", default=list(FIXED_T))
    ap.add_argument("--modes", nargs="*", default=None, help="only these modes (names as in the report)")
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--k", type=int, default=K_SAME_K, help="k-same: distinct people per group")
    ap.add_argument("--k-same-t", type=float, nargs="*", default=list(K_SAME_T),
                    help="k-same: Boomerang's t from the surrogate (one mode per value)")
    ap.add_argument("--scenes", action="store_true",
                    help="region mode on composite scenes (faces pasted at 64-128 px onto backgrounds)")
    ap.add_argument("--scene-t", type=float, nargs="*", default=list(SCENE_T), help="--scenes: t of both modes")
    ap.add_argument("--scene-seed", type=int, default=0, help="--scenes: the probe scenes' seed")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--restorer-steps", type=int, default=300)
    ap.add_argument("--eigen-face-box", choices=["detect", "full"], default="full",
                    help="Eigenfaces and softmax crops: full frame (ORL are face crops, framed like the tool's "
                         "inputs) or MTCNN crops")
    args = ap.parse_args()
    from pipeline.execution.drivers.attacks import (PARROT_SEED_OFFSET, Labelled, attack_mode, load_fid, parrot_run,
                                                    read_labelled_shards, run_outputs, run_probes, scene_crops)
    from pipeline.io.folders import write_folder_shards
    from metrics.attack_suite import default_classifiers, dlib_factory, eigenfaces_factory
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.reports.privacy import write_report

    out = Path(args.out)
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        log_lines.append(message)

    gallery_shards = write_folder_shards(args.data, str(out / "gallery"), split="train")
    gallery = read_labelled_shards(gallery_shards, "key", None)         # centre square, full size
    parrot_inputs = gallery_shards
    if not args.scenes:
        probe_shards = write_folder_shards(args.data, str(out / "test"), split="test")
    else:
        from pipeline.fixtures.wild_scenes import labelled_photo_scenes, write_scene_shards
        from pipeline.regions.scene_geometry import framed_crop
        from pipeline.models.loading import load_model

        probe_scenes = labelled_photo_scenes(args.data, "test", args.scene_seed)
        gallery_scenes = labelled_photo_scenes(args.data, "train", args.scene_seed + PARROT_SEED_OFFSET)
        probe_shards = write_scene_shards(probe_scenes, str(out / "test-scenes"), prefix="scenes-test")
        parrot_inputs = write_scene_shards(gallery_scenes, str(out / "gallery-scenes"), prefix="scenes-train")
        resolution = load_model(args.model, device="cpu").resolution      # crops framed as whole-image probes
    common = dict(job="anonymize", inputs=tuple(probe_shards), output=str(out / "runs"), model=args.model,
                  steps=args.steps, batch_size=16, keys="keep", cpu_threads=1)
    modes = (scene_mode_configs(common, args.scene_t, k=args.k) if args.scenes else
             mode_configs(common, args.fixed_t, margin=args.margin, k=args.k, k_same_t=args.k_same_t))
    if args.modes:
        modes = {k: v for k, v in modes.items() if k in args.modes}
    fid = load_fid()
    if fid.get("reason"):
        log(fid["reason"])
    recognizers = {"dlib": dlib_factory("detect"), "eigenfaces": eigenfaces_factory(args.eigen_face_box)}
    classifiers = default_classifiers(args.eigen_face_box)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}

    def attacked(name: str, compute) -> list[dict]:
        path = out / "attacks" / f"{name.replace(' ', '_').replace('=', '').replace(',', '')}.json"
        if path.exists():
            return json.loads(path.read_text())
        started = time.time()
        rows = compute()
        timings.setdefault(name, {})["attack_s"] = round(time.time() - started, 1)
        path.write_text(json.dumps(rows, default=float))
        if (out / "timings.json").exists():      # modes another process (--modes) attacked meanwhile
            timings.update({k: v for k, v in json.loads((out / "timings.json").read_text()).items() if k not in timings})
        (out / "timings.json").write_text(json.dumps(timings, indent=2))
        return rows

    rows: list[dict] = []
    for name, cfg in modes.items():
        started = time.time()
        run_job(cfg)
        t_probe = time.time() - started
        parrot_dir = parrot_run(cfg, parrot_inputs, str(out / "parrot"))
        t_parrot = time.time() - started - t_probe
        if "probe_run_s" not in timings.get(name, {}) and t_probe > 5:
            timings.setdefault(name, {}).update(probe_run_s=round(t_probe, 1), parrot_run_s=round(t_parrot, 1))
        log(f"{name}: probe run {t_probe:.0f}s, parrot run {t_parrot:.0f}s")
        run_dir = resolve_config(cfg).run_dir

        def compute_scenes(run_dir=run_dir, parrot_dir=parrot_dir, name=name):
            probes, sources, facts = scene_crops(run_dir, probe_scenes, resolution)
            log(f"  {name}: {facts['published']} published, {facts['faces_missed']} faces missed by the detector, "
                f"{facts['pixels_changed_outside']} pixels changed outside the windows")
            parrot, clean, _ = scene_crops(parrot_dir, gallery_scenes, resolution)
            anonymized = Labelled(clean.keys, clean.ids, parrot.images, [parrot_dir])
            pairs = (parrot.images, clean.images) if clean.keys else None
            got = attack_mode(name, gallery, probes, sources, anonymized=anonymized, reversal_pairs=pairs,
                              restorer_steps=args.restorer_steps, fid=fid, recognizers=recognizers,
                              classifiers=classifiers, log=log)
            return [{**r, **facts} for r in got]

        def compute(run_dir=run_dir, parrot_dir=parrot_dir, name=name):
            probes, sources, facts = run_probes(run_dir, "key")
            anonymized_px = run_outputs(parrot_dir)
            size = next(iter(anonymized_px.values())).shape[0] if anonymized_px else None
            clean_small = read_labelled_shards(gallery_shards, "key", size, keys=set(anonymized_px)) if size else None
            keys = clean_small.keys if clean_small else []
            anonymized = Labelled(keys, clean_small.ids if clean_small else [], [anonymized_px[k] for k in keys],
                                  [parrot_dir])
            pairs = ([anonymized_px[k] for k in keys], clean_small.images) if keys else None
            got = attack_mode(name, gallery, probes, sources, anonymized=anonymized, reversal_pairs=pairs,
                              restorer_steps=args.restorer_steps, fid=fid, recognizers=recognizers,
                              classifiers=classifiers, log=log)
            return [{**r, **facts} for r in got]
        rows += attacked(name, compute_scenes if args.scenes else compute)

    def untouched():
        if args.scenes:                                     # the clear crops, framed as the probes
            sources = Labelled([s.key for s in probe_scenes], [s.label for s in probe_scenes],
                               [framed_crop(s.pixels, s.faces[0].box, resolution) for s in probe_scenes], probe_shards)
            facts = {"inputs": len(sources.keys), "published": len(sources.keys)}
            return [{**r, **facts} for r in
                    attack_mode("untouched", gallery, sources, sources, anonymized=None, reversal_pairs=None, fid=fid,
                                recognizers=recognizers, classifiers=classifiers, log=log)]
        size = next((next(iter(px.values())).shape[0] for px in (run_outputs(resolve_config(c).run_dir)
                                                                 for c in modes.values()) if px), None)
        sources = read_labelled_shards(probe_shards, "key", size)       # as the model saw them
        facts = {"inputs": len(sources.keys), "published": len(sources.keys)}
        return [{**r, **facts} for r in
                attack_mode("untouched", gallery, sources, sources, anonymized=None, reversal_pairs=None, fid=fid,
                            recognizers=recognizers, classifiers=classifiers, log=log)]
    rows = attacked("untouched", untouched) + rows
    table = pd.DataFrame(rows)
    table.to_parquet(out / "attacks.parquet", index=False)
    settings = {**vars(args), "people": int(len(set(gallery.ids))), "gallery_photos": len(gallery.keys)}
    notes = [fid.get("reason")]
    if args.scenes:
        notes += [f"{m}: {int(g.published.iloc[0])} published of {int(g.inputs.iloc[0])}, "
                  f"{int(g.faces_missed.iloc[0])} faces missed by the detector (published clear, among the probes), "
                  f"{int(g.pixels_changed_outside.iloc[0])} pixels changed outside the faces' windows"
                  for m, g in table.groupby("mode", sort=False) if "faces_missed" in g and g.faces_missed.notna().any()]
    write_report(out / "report.html", table, settings, timings, notes)
    from pipeline.reports.privacy import rank_table

    print(rank_table(table).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
