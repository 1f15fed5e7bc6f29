"""The jobs' command lines, generated from their settings sections (``pipeline.settings``):
each section's fields are its flags, with one default each; a method's own flags appear once
``--method`` names it (``--method cold-blur --help`` lists them)."""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from metrics.registry import MetricSettings, registered_metrics
from metrics.weights import WeightsUnavailableError
from pipeline.config.job import JobConfig, job_defaults
from pipeline.config.submitted_job import refuse_relative_outputs
from pipeline.config.verbosity import VERBOSE_VARIABLE
from pipeline.errors import UserError
from pipeline.methods import method_names
from pipeline.settings import non_negative_int, positive_float, positive_int  # noqa: F401 (the jobs' flag types)


class JobArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (what is wrong, where to look) instead of the usage wall."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def job_parser(description: str) -> JobArgumentParser:
    ap = JobArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(ap)
    return ap


def add_debug_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--debug", action="store_true", help="show the traceback of a user error (a bad flag, path or model)")
    ap.add_argument("--verbose", action="store_true",
                    help="show Ray's own log lines (hidden by default; also DDP_VERBOSE=1)")


INTERRUPTED = 130          # the shell's code for a command ended by SIGINT (128 + 2)
FORCE_AFTER = 60.0         # seconds the cleanup after an interrupt may take before the process ends anyway


def user_errors_exit_2(main):
    """Wrap a job's ``main(argv)``: a ``UserError`` (what is wrong and what to do) prints one
    line and returns 2 without a traceback, unless ``--debug`` is among the arguments. Ctrl-C
    (SIGINT) stops the job cleanly: the run's lock is released and its workers and private
    cluster end as the exception unwinds, then one line and exit status 130; a second SIGINT,
    or a cleanup that hangs for a minute, ends the process at once (a private cluster's
    watchdog still removes its processes)."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        restore = _catch_interrupts()
        args = sys.argv[1:] if argv is None else argv
        verbose_before = os.environ.get(VERBOSE_VARIABLE)
        if "--verbose" in args:
            os.environ[VERBOSE_VARIABLE] = "1"
        try:
            refuse_relative_outputs(args)
            return main(argv)
        except (UserError, WeightsUnavailableError) as exc:     # a metric's file asked for and not here: one line too
            if "--debug" in (sys.argv[1:] if argv is None else argv):
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: finished shards are kept; rerun the same command to resume", file=sys.stderr,
                  flush=True)
            if argv is None:                   # the program's own entry: its exit must not hang
                _end_after(FORCE_AFTER)
            return INTERRUPTED
        finally:
            restore()
            if verbose_before is None:
                os.environ.pop(VERBOSE_VARIABLE, None)
            else:
                os.environ[VERBOSE_VARIABLE] = verbose_before
    return wrapper


def _catch_interrupts():
    """SIGINT raises KeyboardInterrupt once, then ends the process. Installed whatever the
    inherited disposition: a shell script starting the job in the background (``job &``) has
    SIGINT ignored, and Python then never raises KeyboardInterrupt, so ``kill -INT`` did
    nothing. Returns what puts the previous handler back (only the main thread may set one)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    interrupts = []

    def handler(signum, frame):
        interrupts.append(signum)
        if len(interrupts) == 1:
            raise KeyboardInterrupt
        os.write(2, b"interrupted again: stopping now\n")
        os._exit(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _end_after(seconds: float) -> None:
    import threading

    timer = threading.Timer(seconds, os._exit, (INTERRUPTED,))
    timer.daemon = True
    timer.start()


# The sections each job kind shows as flags (the others keep their defaults: anonymize makes one
# output per input, augment publishes keys and fields as they are).
JOB_FLAG_SECTIONS = {
    "anonymize": ("run", "method_settings", "images", "execution", "publication", "regions", "privacy", "identity"),
    "augment": ("run", "method_settings", "augment", "images", "execution", "regions"),
}


def _method_in(argv: list[str] | None) -> str:
    """The --method an argument list names (before the full parser, which depends on it)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default="boomerang")
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.method if known.method in method_names() else "boomerang"


def job_config_from_argv(job: str, argv: list[str] | None, description: str) -> JobConfig:
    """Parse an anonymize or augment command line into its JobConfig (exit 2 on a bad flag)."""
    return job_command_from_argv(job, argv, description)[0]


def job_command_from_argv(job: str, argv: list[str] | None, description: str, add_flags=None
                          ) -> tuple[JobConfig, argparse.Namespace]:
    """``job_config_from_argv`` with flags of the command's own that are not settings
    (``add_flags(parser)``: e.g. --preview), returned in the parsed arguments."""
    method = _method_in(argv)
    ap = job_parser(description)
    ap.epilog = "Each --method has flags of its own: --method NAME --help lists them."
    ap.add_argument("--method", choices=method_names(), default="boomerang",
                    help="boomerang (noise + diffusion model), or cold-<degradation> with a restorer from "
                         "jobs/train_restoration.py as --model (deterministic degrade-then-restore)")
    classes = JobConfig.section_classes(method)
    defaults = job_defaults(job, method)
    for name in JOB_FLAG_SECTIONS[job]:
        classes[name].add_flags(ap, defaults)
    ap.add_argument("--metrics", action="store_true",
                    help="score outputs in the same pass (see the metrics flags); else run jobs/evaluate.py later")
    add_metric_flags(ap)
    if add_flags is not None:
        add_flags(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    values = {f: getattr(args, f) for name in JOB_FLAG_SECTIONS[job] for f in classes[name].names() if hasattr(args, f)}
    return JobConfig.build(job, args.method, metric_settings_from_args(args) if args.metrics else None, **values), args


def section_argv(section, argv: list[str] | None, description: str):
    """Parse a command line that is one settings section (a tool's flags) into that section."""
    ap = job_parser(description)
    section.add_flags(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return section.from_args(args)


def config_from_argv(config_class, argv: list[str] | None, description: str):
    """Parse a command line whose every section is on it (``InterpConfig``) into its config."""
    ap = job_parser(description)
    for klass in config_class.section_classes().values():
        klass.add_flags(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = {n for klass in config_class.section_classes().values() for n in klass.names()}
    return config_class.build(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def add_metric_flags(ap: argparse.ArgumentParser) -> None:
    """What to measure: every registered metric's settings (``metrics.registry``), shared by the
    jobs' in-pass scoring and jobs/evaluate.py."""
    for metric in registered_metrics():
        metric.settings.add_flags(ap)
    ap.add_argument("--metrics-batch-size", type=positive_int, default=32, help="images per metric network batch")


def metric_settings_from_args(args: argparse.Namespace) -> MetricSettings:
    """The metric settings the flags ask for; FID/KID, on by default, are skipped with one line
    on stderr where their Inception weights are not here (``skipped_fid``)."""
    note = skipped_fid(args)
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    values = {name: getattr(args, name) for metric in registered_metrics() for name in metric.settings.names()
              if hasattr(args, name)}
    return MetricSettings.build(device=getattr(args, "device", "auto"), batch_size=args.metrics_batch_size, **values)


def skipped_fid(args: argparse.Namespace) -> str | None:
    """FID/KID are on by default; their Inception weights come from the torch cache, else a
    download where one is allowed and works. Where neither gives the file (offline), FID/KID
    are turned off in ``args`` and the reason returned (None when FID runs or was not asked
    for). Asked for explicitly (``--inception-weights FILE``, or a ``--fid-reference``), a
    missing file stays an error."""
    if not getattr(args, "fid", False) or getattr(args, "inception_weights", None) or getattr(args, "fid_reference", None):
        return None
    from metrics.inception import FID_WEIGHTS_FILE, FID_WEIGHTS_URL
    from metrics.weights import find_weights, torch_home

    try:
        find_weights(FID_WEIGHTS_FILE, "hub/checkpoints", FID_WEIGHTS_URL, what="FID Inception")
        return None
    except WeightsUnavailableError as exc:
        why = getattr(exc, "why", "it could not be had")
    args.fid = False
    return (f"FID/KID skipped: the Inception weights {FID_WEIGHTS_FILE} are not in {torch_home() / 'hub/checkpoints'} and "
            f"{why}; to score them put the file there (from {FID_WEIGHTS_URL}) or pass --inception-weights FILE "
            f"(--no-fid: no FID, no note)")


def exit_code(manifest_rows: list[dict]) -> int:
    """Non-zero when a shard failed outright (a scheduler should alert); bad samples and
    truncated shards are recorded in the rows and manifest and do not fail the run."""
    return 1 if any(r["status"] == "failed" for r in manifest_rows) else 0


def print_results(table, notes: list[str], report_dir: str, started: float | None = None) -> None:
    """What an evaluation job ends with: its table, what was skipped and why, the report's path."""
    import time

    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for note in notes:
        print(f"note: {note}")
    took = f"  ({time.time() - started:.0f} s)" if started is not None else ""
    print(f"\nreport: {report_dir}/report.html{took}")
