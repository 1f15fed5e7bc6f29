"""The offline demo: synthetic face shards -> Boomerang anonymization at several t and
augmentation on a local Ray cluster -> shards, manifests, rows, a contact sheet and a table of
how far outputs move from their inputs as t grows.

    python jobs/demo.py --out demo_out                    # the committed demo model
    python jobs/demo.py --out demo_out --model google/ddpm-celebahq-256
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import time
from pathlib import Path


from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402

from pipeline.config.job import JobConfig  # noqa: E402
from pipeline.config.verbosity import VERBOSE_VARIABLE  # noqa: E402
from pipeline.reports.contact_sheet import (contact_sheet, first_images, mean_pixel_distance,  # noqa: E402
                                           outputs_by_source, run_images)
from pipeline.execution.drivers.anonymize import run_job  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "demo_model"))
    ap.add_argument("--t", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8])
    ap.add_argument("--steps", type=int, default=50)
    # 16 faces: the contact sheet shows 10, and the distance table's trend over t is as clear as
    # with 64 (which took 14 min on a loaded 2-core machine; see the README's "Two commands")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--verbose", action="store_true", help="show Ray's own log lines (hidden by default)")
    args = ap.parse_args()
    if args.verbose:
        os.environ[VERBOSE_VARIABLE] = "1"
    started = time.time()
    inputs = write_demo_shards(posixpath.join(args.out, "input"), args.shards, args.per_shard)
    common = dict(inputs=tuple(inputs), output=posixpath.join(args.out, "runs"), model=args.model, steps=args.steps,
                  batch_size=args.batch_size, seed=0)
    anonymized = {}
    for t in args.t:
        manifest = run_job(JobConfig.build(job="anonymize", t=(t,), **common))
        anonymized[t] = posixpath.dirname(posixpath.dirname(manifest[0]["output_shard"]))
    manifest = run_job(JobConfig.build(job="augment", t=(0.3,), variants=2, mix_real_prob=0.5, **common))
    augmented = posixpath.dirname(posixpath.dirname(manifest[0]["output_shard"]))

    sources = first_images(inputs, limit=10**9)
    shown = list(sources)[:10]
    rows = [("input", [sources[k] for k in shown])]
    summary = {"model": args.model, "images": len(sources), "runs": {}}
    for t, run_dir in anonymized.items():
        outs = outputs_by_source(run_dir, list(sources))
        resolution = next(iter(outs.values())).shape[0]
        rows.append((f"t = {t}", [outs[k] for k in shown]))
        summary["runs"][str(t)] = {"run_dir": run_dir, "mean_rms_distance_to_input": round(mean_pixel_distance(sources, outs, resolution), 4)}
    aug = run_images(augmented, [f"{k}_t0300_v{v}" for k in shown for v in (0, 1)])
    for v in (0, 1):
        rows.append((f"aug t=0.3 v{v}", [aug[f"{k}_t0300_v{v}"] for k in shown]))
    sheet_path = posixpath.join(args.out, "contact_sheet.png")
    contact_sheet(rows).save(sheet_path)
    summary.update(augment_run_dir=augmented, contact_sheet=sheet_path, seconds=round(time.time() - started, 1))
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nt      mean RMS distance to input (pixels in [0, 1])")
    for t, info in summary["runs"].items():
        print(f"{t:<6} {info['mean_rms_distance_to_input']:.4f}")
    print(f"\ncontact sheet: {sheet_path}\nsummary: {args.out}/summary.json  ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
