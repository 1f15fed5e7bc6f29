"""The completion-marker protocol every step follows, written once.

A task's outputs (shard, rows, features, ...) are written first, each published only when
complete (``pipeline.io.storage``); its manifest row is written last and is the task's completion marker:
a task without one is redone by the next run. An exception in the task (storage, model, an
unreadable input) removes what it wrote and leaves a ``failed`` row, so the next run redoes
it too. No Ray.
"""
from __future__ import annotations

import datetime as dt
import logging
import posixpath
import resource
import time
import traceback
from typing import Callable

import fsspec

from pipeline.errors import UnreadableShard, failure_kind
from pipeline.io.records import rows_table, write_parquet_atomic
from pipeline.io.listing import list_directory
from pipeline.io.storage import temporary_prefix, writes_atomically

log = logging.getLogger(__name__)

# The count columns a failed task reports, per manifest kind.
SHARD_COUNTS = ("samples_in", "samples_ok", "samples_error", "outputs_ok", "outputs_error")
SCORING_COUNTS = ("outputs_scored", "outputs_error")


def run_to_completion(task, schema, outputs: tuple[str, ...], body: Callable[[], dict], base: dict,
                      counts: tuple[str, ...] = SHARD_COUNTS) -> dict:
    """Run ``body`` (it writes the task's outputs and returns the manifest's status, error,
    error_kind and counts), then write the manifest row last; returns the row."""
    started = time.time()
    manifest = dict(base)
    try:
        remove_stale_temporaries(*outputs, task.manifest_url)
        manifest.update(body())
    except Exception as exc:
        log_failure(task.input_url, exc)
        remove_outputs(*outputs)
        manifest.update(failed_task_row(task, failure_message(exc), failure_kind(exc), counts, **base))
    manifest.update(seconds=round(time.time() - started, 3), worker_peak_rss_mb=peak_rss_mb(),
                    finished_at=dt.datetime.now(dt.timezone.utc))
    write_parquet_atomic(rows_table([manifest], schema), task.manifest_url)
    return manifest


def failed_task_row(task, error: str, kind: str, counts: tuple[str, ...] = SHARD_COUNTS, **extra) -> dict:
    """The manifest row of a task that failed outright, one shape for every job kind (written by
    the worker when the task raised, by the driver when the worker died or the input is missing)."""
    return {"input_shard": task.input_url, "output_shard": getattr(task, "output_url", None), **extra,
            "status": "failed", "error": error, "error_kind": kind, **{name: 0 for name in counts}}


def write_failed_row(task, row: dict, schema) -> dict:
    """Write a failed row to the task's manifest file if storage allows; storage may be what
    failed, so an error is logged and the row lives on in memory (the merged manifest and the
    summary take it from there)."""
    try:
        write_parquet_atomic(rows_table([row], schema), task.manifest_url)
    except Exception as exc:
        log.error("could not write the failed manifest row of %s: %s", task.input_url, exc)
    return row


def failure_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, UnreadableShard) else f"{type(exc).__name__}: {exc}"


def log_failure(name: str, exc: BaseException) -> None:
    """One line for an unreadable input (the data's problem), the traceback for anything else."""
    if isinstance(exc, UnreadableShard):
        log.error("%s: %s", name, exc)
    else:
        log.error("%s failed:\n%s", name, traceback.format_exc())


def remove_stale_temporaries(*urls: str) -> None:
    """Delete partial files a killed run left for these files (``.<name>.tmp-<uuid>``). Runs
    only under the run directory's lock, so no live run's temporaries are touched. Found by
    name prefix (one small listing on object stores, not the whole directory), never by a glob
    pattern: a name from a shard is data, and ``[`` or ``*`` in it would match other files.
    Stores whose uploads are atomic get no temporaries (outputs are written to their final
    names), so nothing is listed there."""
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url)
        if writes_atomically(fs):
            continue
        directory, name = posixpath.split(path)
        for leftover in list_directory(fs, directory, temporary_prefix(name)):
            fs.rm(leftover)


def remove_outputs(*urls: str) -> None:
    """Delete an earlier attempt's files (shard, rows), so a failed redo leaves nothing stale.
    Best effort: this runs on the failure path, where storage may be what failed."""
    for url in urls:
        try:
            fs, path = fsspec.core.url_to_fs(url)
            if fs.exists(path):
                fs.rm(path)
        except OSError as exc:
            log.error("could not remove %s: %s", url, exc)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: /proc's VmHWM where there is one
    (``ru_maxrss`` also carries the peak of the process this one was forked from across exec)."""
    try:
        with open("/proc/self/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # KiB on Linux
