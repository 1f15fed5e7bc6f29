"""Measure a face recognizer on a labeled identity folder (one sub-folder per person).

Before trusting "re-identified" numbers on anonymized outputs, check that the recognizer tells
people apart on real photos at the sizes the outputs have:

    python jobs/experiments/check_recognizer.py --data ../shared/datasets/orl_faces --recognizer dlib --out orl_dlib.json
    python jobs/experiments/check_recognizer.py --data ../shared/datasets/orl_faces --recognizer dlib --face-box full \\
        --resolution 32 --out orl_dlib_full_32.json

Every same-person pair and every different-person pair (or a seeded sample of at most
``--max-different``) is scored. Pairs where either photo has no detected face are left out of
the distance statistics and counted. Reported: faces found, mean/std distance of same and
different pairs, TAR/FAR and balanced accuracy at the recognizer's threshold, the threshold with
the best balanced accuracy, and ROC AUC.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402

from metrics.identity import (  # noqa: E402
    RECOGNIZER_NAMES, best_threshold, load_recognizer, pairwise_l2, rates_at, roc_auc,
)
from pipeline.io.images import fit_to_resolution, open_upright, to_rgb  # noqa: E402

IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def load_labeled_folder(data: Path, resolution: int | None) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Images (RGB uint8), integer labels and relative paths; optionally fitted to NxN."""
    people = sorted((p for p in data.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))
    images, labels, names = [], [], []
    for label, person in enumerate(people):
        for path in sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            rgb, _ = to_rgb(open_upright(path))
            if resolution:
                rgb, _ = fit_to_resolution(rgb, resolution)
            images.append(np.asarray(rgb, dtype=np.uint8).copy())
            labels.append(label)
            names.append(str(path.relative_to(data)))
    if not images:
        raise SystemExit(f"no images found under {data} (expected one sub-folder per person)")
    return images, np.asarray(labels), names


def pair_indices(labels: np.ndarray, max_different: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index arrays, i < j, of all same-person pairs and of (a sample of) different ones."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    same_pairs, diff_pairs = np.stack([i[same], j[same]], 1), np.stack([i[~same], j[~same]], 1)
    if len(diff_pairs) > max_different:
        keep = np.random.default_rng(seed).choice(len(diff_pairs), size=max_different, replace=False)
        diff_pairs = diff_pairs[np.sort(keep)]
    return same_pairs, diff_pairs


def pair_distances(dist: np.ndarray, found: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Distances of the pairs whose two photos both have a face, and how many were skipped."""
    ok = found[pairs[:, 0]] & found[pairs[:, 1]]
    return dist[pairs[ok, 0], pairs[ok, 1]], int((~ok).sum())


def summarize(same: np.ndarray, different: np.ndarray, threshold: float) -> dict:
    def stats(d):
        return {"pairs": int(len(d)), "mean": float(np.mean(d)) if len(d) else None,
                "std": float(np.std(d)) if len(d) else None}

    return {"same": stats(same), "different": stats(different), "at_threshold": rates_at(same, different, threshold),
            "best": best_threshold(same, different), "roc_auc": roc_auc(same, different)}


def evaluate(args) -> dict:
    images, labels, names = load_labeled_folder(Path(args.data), args.resolution)
    recognizer = load_recognizer(args.recognizer, device=args.device, weights=args.weights, face_box=args.face_box,
                                 min_side=args.min_side, threshold=args.threshold)
    start = time.perf_counter()
    embeddings = []
    for k in range(0, len(images), args.batch_size):
        embeddings.extend(recognizer.embed(images[k:k + args.batch_size]))
    seconds = time.perf_counter() - start
    found = np.array([e is not None for e in embeddings])
    dim = next((len(e) for e in embeddings if e is not None), 1)
    matrix = np.stack([e if e is not None else np.zeros(dim, np.float32) for e in embeddings])
    dist = pairwise_l2(matrix, recognizer.l2_normalized)
    same_pairs, diff_pairs = pair_indices(labels, args.max_different, args.seed)
    same, same_skipped = pair_distances(dist, found, same_pairs)
    different, diff_skipped = pair_distances(dist, found, diff_pairs)
    report = {
        "config": {"data": str(args.data), "recognizer": recognizer.name, "face_box": args.face_box,
                   "min_side": getattr(recognizer, "min_side", None), "resolution": args.resolution,
                   "resize_rule": "short-side-bicubic+center-crop" if args.resolution else "none",
                   "threshold": recognizer.threshold, "distance_rule": recognizer.distance_rule,
                   "max_different": args.max_different, "seed": args.seed},
        "identities": int(len(np.unique(labels))), "images": len(images),
        "faces_found": int(found.sum()), "faces_found_rate": float(found.mean()),
        "no_face_images": [n for n, f in zip(names, found) if not f][:50],
        "pairs_skipped_no_face": {"same": same_skipped, "different": diff_skipped},
        "embed_seconds": seconds, "images_per_s": len(images) / seconds if seconds else None,
    }
    report.update(summarize(same, different, recognizer.threshold))
    return report


def _fmt(x, spec=".3f"):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def print_summary(r: dict) -> None:
    c = r["config"]
    print(f"{c['recognizer']} face_box={c['face_box']} min_side={c['min_side']} resolution={c['resolution'] or 'native'}"
          f" on {c['data']}")
    print(f"  faces found {r['faces_found']}/{r['images']} ({r['faces_found_rate']:.1%}); "
          f"{r['images_per_s']:.1f} images/s")
    for kind in ("same", "different"):
        s = r[kind]
        print(f"  {kind:9s} pairs {s['pairs']:6d}  distance mean {_fmt(s['mean'])}  std {_fmt(s['std'])}"
              f"  (skipped, no face: {r['pairs_skipped_no_face'][kind]})")
    t, b = r["at_threshold"], r["best"]
    print(f"  at threshold {t['threshold']:.3f}: TAR {_fmt(t['tar'])}  FAR {_fmt(t['far'], '.4f')}  "
          f"balanced accuracy {_fmt(t['balanced_accuracy'])}")
    print(f"  best threshold {_fmt(b['threshold'])}: balanced accuracy {_fmt(b['balanced_accuracy'])};"
          f"  ROC AUC {_fmt(r['roc_auc'], '.4f')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with one sub-folder of photos per person")
    ap.add_argument("--recognizer", default="dlib", choices=RECOGNIZER_NAMES)
    ap.add_argument("--face-box", default="detect", choices=("detect", "full"))
    ap.add_argument("--upscale", "--min-side", dest="min_side", type=int, default=None,
                    help="upscale so the shorter side is at least this before recognition (default per recognizer)")
    ap.add_argument("--resolution", type=int, default=None,
                    help="first fit every photo to NxN (short-side bicubic resize + centre crop), like generated images")
    ap.add_argument("--threshold", type=float, default=None, help="override the recognizer's same-person threshold")
    ap.add_argument("--weights", default=None, help="facenet .pt file or dlib models folder (default: caches)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-different", type=int, default=200_000, help="sample at most this many different-person pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    args = ap.parse_args(argv)
    report = evaluate(args)
    print_summary(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(finite_or_null(report), indent=2, allow_nan=False) + "\n")
        print(f"  wrote {args.out}")
    return 0


def finite_or_null(x):
    """NaN/inf (e.g. AUC with no pairs left) become null: strict JSON has no such numbers."""
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_or_null(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    sys.exit(main())
