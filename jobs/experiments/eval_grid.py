"""`make eval`: anonymize an evaluation set at a grid of t, score every run in the same pass,
and write one comparison report.

    python jobs/experiments/eval_grid.py --out eval_out/grid                      # embedded sample, offline
    python jobs/experiments/eval_grid.py --out eval_out/orl --data ../shared/datasets/orl_faces \\
        --model eval_out/orl_model --face-box full

Without ``--data`` the set is the embedded synthetic faces and the committed demo model. With
``--data`` (a folder of one subfolder per person) its held-out photos (the "test" split of
``jobs/folder_to_shards.py``; the face model is trained on the "train" split) are converted
to shards first. Metrics default to what this machine can run without downloading: every
recognizer whose weights are present (dlib's ship with its package) and FID/KID when the
Inception weights are cached; anything skipped is said so, never silently.
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

from metrics.suite import MetricSettings  # noqa: E402
from pipeline.config.job import JobConfig  # noqa: E402

DEFAULT_T = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def offline_metrics(face_box: str, device: str, want_fid: bool | None) -> tuple[MetricSettings, list[str]]:
    """Settings for what can run here without a download, and notes on what was skipped."""
    from metrics.identity import RECOGNIZER_NAMES, why_unavailable
    from metrics.inception import why_fid_unavailable

    notes, recognizers = [], []
    for name in RECOGNIZER_NAMES:
        reason = why_unavailable(name)
        if reason is None:
            recognizers.append(name)
        else:
            notes.append(f"recognizer {name} skipped: {reason}")
    fid = want_fid
    if fid is None:
        reason = why_fid_unavailable()
        fid = reason is None
        if reason:
            notes.append(f"FID/KID skipped: {reason}")
    return MetricSettings.build(recognizers=tuple(recognizers), face_box=face_box, fid=fid, device=device), notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="eval_out/grid")
    ap.add_argument("--data", default=None, help="a labelled face folder (e.g. ../shared/datasets/orl_faces)")
    ap.add_argument("--model", default=None, help="default: assets/demo_model (embedded) or required with --data")
    ap.add_argument("--t", type=float, nargs="+", default=DEFAULT_T)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--face-box", choices=["detect", "full"], default="full",
                    help="full: the frame is the face (aligned crops, small generated images)")
    ap.add_argument("--fid", dest="fid", action="store_true", default=None, help="require FID/KID")
    ap.add_argument("--no-fid", dest="fid", action="store_false")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cpu-threads", type=int, default=None, help="torch threads per CPU worker")
    args = ap.parse_args()
    started = time.time()

    from pipeline.config.cli import print_results
    from pipeline.reports.evaluation import write_report
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    if args.data:
        if not args.model:
            raise SystemExit("--data needs --model (train one offline: make eval-model EVAL_DATA=...)")
        inputs = write_folder_shards(args.data, posixpath.join(args.out, "input"), split="test", per_shard=100)
        model = args.model
    else:
        inputs = write_demo_shards(posixpath.join(args.out, "input"), args.shards, args.per_shard)
        model = args.model or str(REPO / "assets" / "demo_model")
    settings, notes = offline_metrics(args.face_box, args.device, args.fid)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    run_dirs = []
    for t in args.t:
        cfg = JobConfig.build(job="anonymize", inputs=tuple(inputs), output=posixpath.join(args.out, "runs"), model=model,
                        t=(t,), steps=args.steps, seed=0, batch_size=args.batch_size, device=args.device,
                        cpu_threads=args.cpu_threads, metrics=settings)
        run_job(cfg)
        run_dirs.append(resolve_config(cfg).run_dir)
    title = f"Boomerang anonymization over t: {args.data or 'embedded synthetic faces'}"
    report_dir = posixpath.join(args.out, "report")
    summary = write_report(run_dirs, settings.eval_dir_name(), report_dir, title=title)
    columns = ["t"] + [c for c in summary.columns if c.endswith(("_reid_rate", "_l2_mean", "_output_face_rate"))] + \
        [c for c in ("fid", "kid_mean", "psnr_mean", "ssim_mean") if c in summary]
    print_results(summary[columns], notes, report_dir, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
