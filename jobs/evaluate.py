"""Score existing runs and write a comparison report (on the cluster, like the jobs).

    ray job submit --working-dir . -- python jobs/evaluate.py \\
        --runs OUT/anonymize-0123456789ab OUT/anonymize-ba9876543210 \\
        --recognizers facenet dlib --report OUT/report

For each run directory, outputs not scored yet with these metric settings are scored beside
their sources (under ``<run>/eval-<hash8>/``; reruns skip scored shards), then every run is
summarised into ``--report``: summary.parquet (one row per run and t), per_sample.parquet and
report.html. Runs made with ``--metrics`` were scored during generation already.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.cli import (add_metric_flags, job_parser, metric_settings_from_args, non_negative_int,  # noqa: E402
                          positive_int, user_errors_exit_2)


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    ap = job_parser(__doc__)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories (<output>/<job>-<hash12>)")
    ap.add_argument("--report", required=True, help="directory for summary.parquet, per_sample.parquet, report.html")
    ap.add_argument("--fid-reference", default=None,
                    help="a pytorch-fid .npz (mu, sigma) to compare against instead of the inputs (KID is then null)")
    ap.add_argument("--title", default="Evaluation report")
    ap.add_argument("--address", default=None)
    ap.add_argument("--num-gpus", type=non_negative_int, default=None)
    ap.add_argument("--num-cpu-workers", type=positive_int, default=1)
    ap.add_argument("--cpu-threads", type=positive_int, default=None)
    ap.add_argument("--device", default="auto")
    add_metric_flags(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from pipeline.io.feature_files import load_reference_npz
    from pipeline.reports.evaluation import write_report
    from pipeline.execution.drivers.evaluation import run_evaluation

    settings = metric_settings_from_args(args)
    for run_dir in args.runs:
        run_evaluation(run_dir.rstrip("/"), settings, address=args.address, num_gpus=args.num_gpus,
                       num_cpu_workers=args.num_cpu_workers, cpu_threads=args.cpu_threads)
    reference = load_reference_npz(args.fid_reference) if args.fid_reference else None
    summary = write_report([r.rstrip("/") for r in args.runs], settings.eval_dir_name(), args.report, reference, args.title)
    print(summary.drop(columns=["run_dir"]).to_string(index=False, max_colwidth=30))
    print(f"\nreport: {args.report}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
