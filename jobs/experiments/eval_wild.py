"""Faces in the wild (``make eval-wild``): does ``--region faces`` find the faces, change who
they are, and leave everything else alone?

    python jobs/experiments/eval_wild.py --out eval_out/wild --orl ../shared/datasets/orl_faces

Builds scenes (``wild_scenes.py``: ORL and synthetic faces pasted at 20-96 px into backgrounds
with no face, 0-3 per scene, true boxes kept aside, plus matplotlib's photo of Grace Hopper),
runs the anonymize job on them with ``--region faces`` (the demo model unless ``--model``),
and measures against the true boxes:

* detection recall and precision: a detection matches a pasted face when most of it (>= 50%
  of its area) lies inside the pasted photo (the photo's rectangle is the truth; it is larger
  than the face a detector boxes, so IoU would undercount);
* re-identification per face with dlib: the face cut from the scene (true box) against another
  photo of the same person (the attacker's gallery), before (source scene) and after (output);
* PSNR outside every changed window (must be infinite: those pixels are the source's) and
  outside the true boxes grown by the crop margin (finite only where a detection fell on the
  background);
* seams: gradient energy on the outer band of each blend mask in the output against the same
  band in the source (1.0: no edge added);
* faces per second of the job's wall time.

Writes OUT/wild_report.json, OUT/wild_faces.parquet (one row per true face) and
OUT/report.html (scenes before and after, and face crops: source, mask, output).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.fixtures.wild_scenes import grace_hopper_scene, make_scenes, write_scene_shards  # noqa: E402
from pipeline.regions.scene_geometry import changed_windows, coverage  # noqa: E402

COVERAGE = 0.5


def psnr_where(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    if not where.any():
        return float("nan")
    mse = np.mean((a[where].astype(np.float64) - b[where].astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def gradient_energy(image: np.ndarray, where: np.ndarray) -> float:
    g = image.astype(np.float64).mean(axis=2)
    gy, gx = np.zeros_like(g), np.zeros_like(g)
    gy[1:], gx[:, 1:] = np.abs(np.diff(g, axis=0)), np.abs(np.diff(g, axis=1))
    return float((gx + gy)[where].mean()) if where.any() else float("nan")


def measure(scenes, outputs: dict, faces: pd.DataFrame, cfg) -> tuple[list[dict], dict]:
    from metrics.identity import load_recognizer
    from pipeline.regions.boxes import FaceBox, square_crop
    from pipeline.regions.compose import feather_mask

    dlib = load_recognizer("dlib", face_box="full")
    per_face, seams, outside_changed, outside_true = [], [], [], []
    detections = {k: g for k, g in faces.groupby("source_key")}
    matched_detections = 0
    for scene in scenes:
        det = detections.get(scene.key, faces.iloc[:0])
        out = outputs.get(scene.key)
        boxes = [tuple(r) for r in det[["x0", "y0", "x1", "y1"]].itertuples(index=False)]
        matched_detections += sum(any(coverage(b, f.box) >= COVERAGE for f in scene.faces) for b in boxes)
        if out is None:
            for f in scene.faces:
                per_face.append({"scene": scene.key, "person": f.person, "size": f.box[3] - f.box[1], "found": False,
                                 "published": False})
            continue
        changed = changed_windows(scene.pixels.shape[:2], det)
        for r in det.itertuples():
            if r.action == "regenerated":
                x, y, s = int(r.crop_x), int(r.crop_y), int(r.crop_side)
                crop = square_crop(FaceBox(r.x0, r.y0, r.x1, r.y1), cfg.regions.face_margin, *scene.pixels.shape[1::-1])
                mask = feather_mask(crop, FaceBox(r.x0, r.y0, r.x1, r.y1), cfg.regions.face_feather * min(r.x1 - r.x0, r.y1 - r.y0))
                band = np.zeros_like(changed)
                band[y:y + s, x:x + s] = (mask > 0) & (mask < 0.2)
                seams.append(gradient_energy(out, band) / max(gradient_energy(scene.pixels, band), 1e-9))
        outside_changed.append(psnr_where(scene.pixels, out, ~changed))
        grown = np.ones_like(changed)
        for f in scene.faces:
            crop = square_crop(FaceBox(*f.box), cfg.regions.face_margin, *scene.pixels.shape[1::-1])
            grown[crop.y:crop.y + crop.side, crop.x:crop.x + crop.side] = False
        outside_true.append(psnr_where(scene.pixels, out, grown))
        for f in scene.faces:
            x0, y0, x1, y1 = f.box
            before, after, gallery = dlib.embed([scene.pixels[y0:y1, x0:x1], out[y0:y1, x0:x1], f.gallery])
            found = any(coverage(b, f.box) >= COVERAGE for b in boxes)
            row = {"scene": scene.key, "person": f.person, "size": y1 - y0, "found": found, "published": True}
            if gallery is not None and before is not None:
                row["distance_before"] = float(np.linalg.norm(before - gallery))
                row["reidentified_before"] = row["distance_before"] < dlib.threshold
            if gallery is not None and after is not None:
                row["distance_after"] = float(np.linalg.norm(after - gallery))
                row["reidentified_after"] = row["distance_after"] < dlib.threshold
            per_face.append(row)
    table = pd.DataFrame(per_face)
    n_true, n_det = len(table), len(faces[["source_key", "face"]].drop_duplicates()) if len(faces) else 0
    summary = {
        "scenes": len(scenes), "true_faces": n_true, "detections": n_det,
        "recall": float(table.found.mean()) if n_true else None,
        "precision": matched_detections / n_det if n_det else None,
        "recall_by_source": {k: float(g.found.mean()) for k, g in table.groupby(table.person.str.split("-").str[0])},
        "psnr_outside_changed_min": float(np.nanmin(outside_changed)) if outside_changed else None,
        "psnr_outside_true_boxes_min": float(np.nanmin(outside_true)) if outside_true else None,
        "seam_ratio_median": float(np.median(seams)) if seams else None,
    }
    for when in ("before", "after"):
        col = f"reidentified_{when}"
        if col in table:
            judged = table[col].dropna()
            summary[f"reid_rate_{when}"] = float(judged.astype(bool).mean()) if len(judged) else None
            summary[f"faces_judged_{when}"] = int(len(judged))
            for found, name in ((True, "found"), (False, "missed")):      # a missed face is published as it is
                part = table[table.found == found][col].dropna()
                summary[f"reid_rate_{when}_{name}"] = float(part.astype(bool).mean()) if len(part) else None
    return per_face, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="eval_out/wild")
    ap.add_argument("--orl", default=None, help="ORL faces folder (e.g. ../shared/datasets/orl_faces); else synthetic only")
    ap.add_argument("--model", default=str(REPO / "assets" / "demo_model"))
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--t", type=float, default=0.6)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--detector", choices=["mtcnn", "dlib"], default="mtcnn")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.io.images import prepare_image
    from pipeline.io.shards import ShardReader
    from pipeline.reports.wild import write_report

    out = Path(args.out)
    scenes = make_scenes(args.scenes, args.orl) + [grace_hopper_scene()]
    shards = write_scene_shards(scenes, str(out / "scenes"))
    cfg = JobConfig.build(job="anonymize", inputs=tuple(shards), output=str(out / "runs"), model=args.model, t=(args.t,),
                    steps=args.steps, batch_size=args.batch_size, keys="keep", region="faces", detector=args.detector,
                    no_face="drop", min_face=16)
    started = time.time()
    run_job(cfg)
    wall = time.time() - started
    run_dir = Path(resolve_config(cfg).run_dir)
    outputs = {s.key: prepare_image(s.fields["png"], None, 1, keep_size=True).pixels
               for url in sorted((run_dir / "shards").glob("*.tar")) for s in ShardReader(str(url))}
    faces = pd.read_parquet(run_dir / "faces")
    per_face, summary = measure(scenes, outputs, faces, cfg)
    # Throughput in the workers (detection, generation, blending, encoding), without the cluster's start.
    worker_seconds = float(pd.read_parquet(run_dir / "manifest.parquet").seconds.sum())
    regenerated = int((faces.action == "regenerated").sum())
    summary.update(job_seconds=round(wall, 1), worker_seconds=round(worker_seconds, 1),
                   faces_per_second=round(regenerated / worker_seconds, 2) if worker_seconds else None,
                   model=args.model, t=args.t, steps=args.steps, detector=args.detector, run_dir=str(run_dir),
                   grace_hopper=next((r for r in per_face if r["scene"] == "grace_hopper"), None))
    pd.DataFrame(per_face).to_parquet(out / "wild_faces.parquet", index=False)
    (out / "wild_report.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(out / "report.html", scenes, outputs, faces, summary, cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
