"""Score existing runs and write a comparison report (on the cluster, like the jobs).

    ray job submit --working-dir . -- python jobs/evaluate.py \\
        --runs OUT/anonymize-0123456789ab OUT/anonymize-ba9876543210 \\
        --recognizers facenet dlib --report OUT/report

For each run directory, outputs not scored yet with these metric settings are scored beside
their sources (under ``<run>/eval-<hash8>/``; reruns skip scored shards), then every run is
summarised into ``--report``: summary.parquet (one row per run and t), per_sample.parquet and
report.html. Runs made with ``--metrics`` were scored during generation already. A ``--identity
k-same`` run is scored per group shard, each output against its own member's pixels as the
model saw them (the run's stage-1 cache); a group redone since is scored again.

Attackers outside the loop (issue 23; ``metrics.attack_suite``): give a labelled gallery of
other photos of the people and say how a probe's person is named:

    python jobs/evaluate.py --runs OUT/anonymize-0123456789ab --report OUT/report \
        --attack-gallery photos/  --person-from key  --attacks naive parrot reversal

``--attack-gallery``: a folder of one subfolder per person (named by the folder), or shards
whose samples are named by ``--person-from``. ``--person-from``: ``key`` (the key up to its last
"_", as jobs/folder_to_shards.py writes keys), ``field:NAME`` (a field of the run's input
sample, e.g. ``field:cls``) or ``regex:PATTERN`` (first group on the key); a run's rows map each
output to its source. ``--attacks``: ``naive`` (clear gallery: dlib, Eigenfaces, two
classifiers; linkability), ``parrot`` (the run's own configuration over the gallery with
another seed, then parrot and SEBA-style attackers: costs a run over the gallery), ``reversal``
(a restorer trained on the parrot's pairs; implies parrot). Results: ``attacks.parquet``,
columns ``attack_<attacker>_rank1`` in summary.parquet and a section of report.html.
FID/KID are skipped with one line when the Inception weights file is absent (offline).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.config.cli import (add_metric_flags, job_parser, metric_settings_from_args, non_negative_int,
                                 positive_int, skipped_fid, user_errors_exit_2)


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
    g = ap.add_argument_group("attackers outside the loop")
    g.add_argument("--attack-gallery", nargs="+", default=None,
                   help="labelled gallery: a folder of one subfolder per person, or shards (--person-from names them)")
    g.add_argument("--person-from", default="key", help="key | field:NAME | regex:PATTERN (default: key)")
    g.add_argument("--attacks", nargs="+", choices=["naive", "parrot", "reversal"], default=["naive"])
    g.add_argument("--attack-face-box", choices=["detect", "full"], default="detect",
                   help="Eigenfaces/softmax crops: MTCNN on upscaled images (full frame where none), or the frame")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from pipeline.io.feature_files import load_reference_npz
    from pipeline.reports.evaluation import write_report
    from pipeline.execution.drivers.evaluation import run_evaluation

    fid_note = skipped_fid(args)          # offline default: one line here and in the report, the rest scored
    if fid_note:
        print(f"note: {fid_note}", file=sys.stderr, flush=True)
    settings = metric_settings_from_args(args)
    for run_dir in args.runs:
        run_evaluation(run_dir.rstrip("/"), settings, address=args.address, num_gpus=args.num_gpus,
                       num_cpu_workers=args.num_cpu_workers, cpu_threads=args.cpu_threads)
    reference = load_reference_npz(args.fid_reference) if args.fid_reference else None
    attacks = None
    if args.attack_gallery:
        from pipeline.execution.drivers.attacks import attack_runs

        attacks = attack_runs([r.rstrip("/") for r in args.runs], args.attack_gallery, args.person_from, args.attacks,
                              Path(args.report), face_box=args.attack_face_box)
    summary = write_report([r.rstrip("/") for r in args.runs], settings.eval_dir_name(), args.report, reference, args.title,
                           attacks=attacks, notes=[fid_note] if fid_note else [])
    key = summary.attrs.get("key_columns") or [c for c in summary.columns if c != "run_dir"]
    print(summary[key].to_string(index=False, max_colwidth=30, float_format=lambda v: f"{v:.4g}"))
    print(f"\n{len(key)} of {summary.shape[1]} summary columns shown; all in {args.report}/summary.parquet")
    print(f"report: {args.report}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
