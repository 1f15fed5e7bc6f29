"""Compare slerp, noise injection and NoiseDiffusion on one evaluation set (``make eval-interp``).

Offline default: held-out synthetic faces (identities the embedded demo model never saw) with
the embedded demo model. ``--data`` takes a folder of images (one subfolder per class, e.g.
../shared/datasets/orl_faces): real photographs are natural, out-of-model images for a model
trained on synthetic faces, the setting NoiseDiffusion is about. Pairs are drawn at random
(seeded) across all shards and written as a pairs file, so only their images are inverted.
Writes <out>/runs/interpolate-<hash>/report/report.html.
"""
from __future__ import annotations

import argparse
import posixpath
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from pipeline.io.folders import write_folder_shards  # noqa: E402
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402

SHOWN = ["method", "frames_ok", "rms_nearest_mean", "rms_to_prev_mean", "step_max_over_mean", "latent_norm_ratio_mean",
         "beyond_boundary_share_mean", "saturated_share_mean", "brightness_mean", "lpips_nearest_mean", "fid", "kid_mean"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="eval_out/interp")
    ap.add_argument("--data", default=None, help="a folder with one subfolder of images per class")
    ap.add_argument("--model", default=str(REPO / "assets" / "demo_model"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--invert-steps", type=int, default=140)
    ap.add_argument("--gamma", type=float, default=0.0)
    ap.add_argument("--boundary", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cpu-threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    started = time.time()

    from metrics.fidelity import why_lpips_unavailable
    from metrics.inception import why_fid_unavailable
    from pipeline.config.cli import print_results
    from pipeline.config.interpolation import InterpConfig
    from pipeline.reports.interpolation import write_interp_report
    from pipeline.execution.drivers.interpolation import resolve_interp_config, run_interpolation
    from pipeline.io.pairs import random_pairs, write_pairs_file
    from pipeline.io.shards import ShardReader

    data_dir = posixpath.join(args.out, "input")
    if args.data:
        inputs = write_folder_shards(args.data, data_dir, split="all", per_shard=100)
    else:
        inputs = write_demo_shards(data_dir, shards=2, per_shard=2 * args.pairs)
    keys = [sample.key for url in inputs for sample in ShardReader(url)]
    pairs_file = posixpath.join(args.out, "pairs.csv")
    write_pairs_file(random_pairs(keys, args.pairs, seed=0), pairs_file)
    fid_reason, lpips_reason = why_fid_unavailable(), why_lpips_unavailable()
    notes = [f"{name} skipped: {reason}" for name, reason in (("FID/KID", fid_reason), ("LPIPS", lpips_reason)) if reason]
    lpips = lpips_reason is None
    cfg = InterpConfig.build(inputs=tuple(inputs), output=posixpath.join(args.out, "runs"), model=args.model, pairs="file",
                       pairs_file=pairs_file, methods=("slerp", "noise", "noisediffusion"), steps=args.steps,
                       invert_steps=args.invert_steps, gamma=args.gamma, boundary=args.boundary,
                       fid=fid_reason is None, lpips=lpips, batch_size=args.batch_size, cpu_threads=args.cpu_threads,
                       device=args.device, pairs_per_shard=4)
    run_interpolation(cfg)
    run_dir = resolve_interp_config(cfg).run_dir
    title = f"Interpolation methods on {args.data or 'held-out synthetic faces'} ({Path(args.model).name})"
    report_dir = write_interp_report(run_dir, n_pairs=min(args.pairs, 6), title=title)
    import pandas as pd

    summary = pd.read_parquet(posixpath.join(report_dir, "summary.parquet"))
    print_results(summary[[c for c in SHOWN if c in summary and summary[c].notna().any()]], notes, report_dir, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
