"""Privacy you can set, judged from outside (``make eval-privacy``): a fixed t for every image
against ``--privacy-target``, each attacked by someone holding other photos of the people.

    python jobs/experiments/eval_privacy.py --data ../shared/datasets/orl_faces --model eval_out/orl_faces_model \\
        --out eval_out/privacy

The held-out photos of each person (the "test" split: photos 6-10) are anonymized at each t of
the grid and with the target (same grid, dlib in the loop, a face still required); the other
photos (1-5, what the face model was trained on) are the attacker's gallery. Per run:

* attacker (outside the loop): (a) rank-1 / rank-5 identification by the nearest gallery
  photo, per recognizer; (b) a classifier trained on the gallery photos only; (c) linkability:
  AUC of "same person" over pairs of outputs. Each with its chance level; the untouched photos
  (at the model's resolution) are the sanity row.
* the loop's own view: re-identification of each output against its source, faces found in
  the outputs (MTCNN);
* fidelity to the source (PSNR, SSIM; LPIPS where its backbone weights are cached) and cost
  (network evaluations and worker seconds per image).

Writes OUT/privacy_summary.parquet, OUT/privacy_summary.json and OUT/report.html (the
privacy-fidelity frontier). The claim tested, whatever the outcome: at equal attacker success,
the target keeps more fidelity than the best fixed t.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "jobs"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LPIPS: dict = {}          # the LPIPS network, where its backbone weights are in the torch cache


def person_of(key: str) -> str:
    return key.rsplit("_", 1)[0]          # folder_to_shards keys: <class>_<photo>


def gallery_photos(data: Path, train_photos: int = 5) -> tuple[list[np.ndarray], list[str]]:
    from pipeline.io.folders import labelled_images
    from pipeline.io.images import open_upright

    items = [it for it in labelled_images(data, train_photos) if it["split"] == "train"]
    return [np.asarray(open_upright(it["path"]).convert("RGB")) for it in items], [it["class"] for it in items]


def run_images(run_dir: str) -> dict[str, np.ndarray]:
    from pipeline.io.images import find_image_field, prepare_image
    from pipeline.io.shards import ShardReader

    return {s.key: prepare_image(s.fields[find_image_field(s.fields)], None, 1).pixels
            for url in sorted(Path(run_dir, "shards").glob("*.tar")) for s in ShardReader(str(url))}


def measure(name: str, outputs: dict, sources: dict, classifier, gallery_ids, recognizers, face_check,
            run_dir=None) -> dict:
    from metrics.attacker import identification, linkability
    from metrics.fidelity import pair_fidelity, to_unit_batch
    from metrics.identity import compare_embeddings

    keys = sorted(outputs)
    ids = [person_of(k) for k in keys]
    outs = [outputs[k] for k in keys]
    row = {"run": name, "published": len(keys), "of": len(sources)}
    for r in recognizers:
        out_emb = r.embed(outs)
        src_emb = r.embed([sources[k] for k in keys])
        attack = identification(r.gallery_embeddings, gallery_ids, out_emb, ids)
        link = linkability(out_emb, ids, r.threshold)
        loop = [compare_embeddings(s, o, r.threshold, r.l2_normalized)["reidentified"] for s, o in zip(src_emb, out_emb)]
        row.update({f"{r.name}_rank1": attack["rank1"], f"{r.name}_rank5": attack["rank5"],
                    f"{r.name}_rank1_chance": attack["rank1_chance"], f"{r.name}_link_auc": link["auc"],
                    f"{r.name}_loop_reid": float(np.mean([bool(x) for x in loop])),
                    f"{r.name}_no_face": attack["probes_without_face"] / max(len(keys), 1)})
    cls = classifier.attack(np.stack(outs), ids)
    row.update(classifier_acc=cls["accuracy"], classifier_chance=cls["chance"])
    row["face_in_output"] = float(np.mean(face_check(outs)))
    fid = pair_fidelity(to_unit_batch([sources[k] for k in keys]), to_unit_batch(outs), lpips=LPIPS.get("net"))
    finite = fid["psnr"][np.isfinite(fid["psnr"].numpy())]
    row.update(psnr=float(finite.mean()) if len(finite) else None, ssim=float(fid["ssim"].mean()))
    if "lpips" in fid:
        row["lpips"] = float(fid["lpips"].mean())
    if run_dir is not None:
        rows = pd.read_parquet(Path(run_dir, "rows"))
        manifest = pd.read_parquet(Path(run_dir, "manifest.parquet"))
        row.update(evals_per_image=float(rows.model_evals.fillna(0).sum() / len(rows)),
                   worker_seconds_per_image=float(manifest.seconds.sum() / len(rows)))
        if "privacy" in rows and rows.privacy.notna().any():
            row.update(target_met=float((rows.privacy == "met").mean()),
                       t_chosen_mean=float(rows[rows.privacy == "met"].t.mean()))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder of one subfolder per person (ORL)")
    ap.add_argument("--model", required=True, help="the face model (trained on the gallery split)")
    ap.add_argument("--out", default="eval_out/privacy")
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    from pipeline.io.folders import write_folder_shards
    from metrics.attacker import GalleryClassifier
    from metrics.identity import available_recognizers, load_recognizer
    from PIL import Image
    from metrics.privacy_judge import MtcnnFaceCheck
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.io.images import prepare_image
    from pipeline.io.shards import ShardReader
    from privacy_report import write_report

    out = Path(args.out)
    shards = write_folder_shards(args.data, str(out / "test"), split="test")
    gallery, gallery_ids = gallery_photos(Path(args.data))
    loop = tuple(n for n in ("dlib", "facenet") if n in available_recognizers())
    common = dict(job="anonymize", inputs=tuple(shards), output=str(out / "runs"), model=args.model, steps=args.steps,
                  batch_size=16, keys="keep")
    runs = {f"t={t:g}": JobConfig.build(**common, t=(t,)) for t in args.grid}
    runs["target"] = JobConfig.build(**common, privacy_target=True, t_grid=tuple(args.grid), margin=args.margin,
                               loop_recognizers=loop, loop_face_box="detect", unmet="drop")
    for cfg in runs.values():
        run_job(cfg)
    first = resolve_config(runs[f"t={args.grid[0]:g}"]).run_dir
    size = next(iter(run_images(first).values())).shape[0]
    sources = {s.key: prepare_image(s.fields["pgm"], size, 1).pixels for url in shards for s in ShardReader(url)}
    recognizers = [load_recognizer(n, face_box="detect") for n in loop]
    for r in recognizers:
        r.gallery_embeddings = r.embed(gallery)
    face_check = MtcnnFaceCheck()
    from metrics.fidelity import load_lpips, why_lpips_unavailable

    if why_lpips_unavailable() is None:
        LPIPS["net"] = load_lpips(allow_download=False)
    else:
        print(f"note: LPIPS skipped: {why_lpips_unavailable()}")
    # The classifier attacker sees the gallery at the outputs' size, trained once for every run.
    small = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BICUBIC)) for g in gallery])
    classifier = GalleryClassifier(small, gallery_ids, epochs=60, seed=0)
    rows = [measure("untouched", sources, sources, classifier, gallery_ids, recognizers, face_check)]
    rows += [measure(name, run_images(resolve_config(cfg).run_dir), sources, classifier, gallery_ids, recognizers,
                     face_check, resolve_config(cfg).run_dir) for name, cfg in runs.items()]
    table = pd.DataFrame(rows)
    table.to_parquet(out / "privacy_summary.parquet", index=False)
    (out / "privacy_summary.json").write_text(json.dumps(rows, indent=2, default=str))
    write_report(out / "report.html", table, loop, vars(args))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
