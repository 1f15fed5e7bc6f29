"""What every driver shares: the inputs expanded and listed (sizes, content versions), the run
directory's own files (config.json, runs.jsonl), the merge of a run's manifest rows into the
checkpoint, the notes on inputs not found, and the summary a scheduler's log shows."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass

import fsspec

from pipeline.config.job import JobConfig
from pipeline.engine.tasks import ShardTask
from pipeline.errors import UserError
from pipeline.execution.planning import Checkpoint, checkpoint_url, task_rows
from pipeline.execution.withdrawal import Withdrawal
from pipeline.io.listing import object_states
from pipeline.io.records import write_bytes_atomic
from pipeline.io.shards import expand_shard_urls, shard_name


@dataclass
class RunPlan:
    run_dir: str
    pending: list[ShardTask]
    skipped: list[str]
    missing: list[str] = dataclasses.field(default_factory=list)   # inputs named that do not exist and never did here: no rows
    checkpoint: Checkpoint | None = None      # the finished work it was planned from; updated by merge_manifest
    gone: list[str] = dataclasses.field(default_factory=list)      # inputs processed before that no longer exist
    changed: set[str] = dataclasses.field(default_factory=set)     # pending because their content changed


def expand_inputs(inputs) -> tuple[str, ...]:
    """The input shard URLs, local paths made absolute (manifests name each input by them, and a
    later run from another directory must find the same inputs, not call them gone); outputs are
    named after them, so base names must be unique."""
    shards = tuple(u if "://" in u or "::" in u else os.path.abspath(u) for u in expand_shard_urls(list(inputs)))
    if not shards:
        raise UserError(f"--input {list(inputs)} matches no shards")
    counts = Counter(shard_name(u) for u in shards)
    clashes = sorted(n for n, c in counts.items() if c > 1)
    if clashes:
        raise UserError(f"input shards share base names {clashes[:5]}: outputs are named after inputs, so "
                         f"process each directory as its own run (or rename the shards)")
    return shards


def list_inputs(inputs) -> dict[str, tuple | None]:
    """Each input's size and content version (``io.listing.object_states``), taken before the run
    directory is touched: when none of the inputs exists (a wrong path or pattern, storage not
    mounted) nothing could be told apart from a deleted dataset, so the run stops here with a
    user error, before its lock, its files or Ray."""
    states = object_states(inputs)
    if inputs and all(state is None for state in states.values()):
        raise UserError(f"--input: none of the {len(inputs)} input shard(s) exists (e.g. {inputs[0]}); check the "
                        f"path or pattern (nothing was written)")
    return states


def missing_note(missing: list[str]) -> list[str]:
    if not missing:
        return []
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return [f"{len(missing)} input(s) not found (nothing recorded; a later run processes them once they exist): "
            f"{', '.join(missing[:3])}{more}"]


def rows_of_inputs(rows: list[dict], inputs) -> list[dict]:
    """The merged rows of these inputs: what this run reports and its exit status is computed
    from (rows of other inputs kept in the run directory from other nights are not its business)."""
    wanted = set(inputs)
    return [r for r in rows if r["input_shard"] in wanted]


def evaluation_dirs(run_dir: str) -> list[str]:
    """The run's ``eval-<hash8>/`` directories (one listing of the run directory)."""
    from pipeline.io.listing import list_directory

    fs, path = fsspec.core.url_to_fs(run_dir)
    return sorted(posixpath.join(run_dir, posixpath.basename(p)) for p, e in list_directory(fs, path).items()
                  if e.get("type") == "directory" and posixpath.basename(p).startswith("eval-"))


def withdrawal_failures(withdrawal: Withdrawal) -> list[dict]:
    """A failed withdrawal fails the run (exit 1): rows for the exit status and the caller."""
    from pipeline.errors import WRITE_FAILED

    return [{"input_shard": url, "status": "failed", "error": f"withdrawing its outputs failed: {why}",
             "error_kind": WRITE_FAILED} for url, why in withdrawal.failed]


def write_run_files(cfg: JobConfig, plan: RunPlan, withdrawal: Withdrawal | None = None) -> None:
    fs, path = fsspec.core.url_to_fs(plan.run_dir)
    fs.makedirs(path, exist_ok=True)
    write_bytes_atomic(cfg.to_json().encode(), posixpath.join(plan.run_dir, "config.json"))
    entry = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "pending": len(plan.pending),
             "skipped": len(plan.skipped), "missing": len(plan.missing), "changed": len(plan.changed),
             **(withdrawal or Withdrawal()).log_entry(), "argv": sys.argv}
    log_path = posixpath.join(path, "runs.jsonl")
    try:
        previous = fs.cat_file(log_path).decode()
    except FileNotFoundError:
        previous = ""
    write_bytes_atomic((previous + json.dumps(entry) + "\n").encode(), posixpath.join(plan.run_dir, "runs.jsonl"))


def merge_manifest(checkpoint: Checkpoint, tasks: list, this_run: list[dict] = ()) -> list[dict]:
    """Update the checkpoint the run was planned from (``manifest.parquet`` beside the
    per-shard files; one row per shard) with the rows of this run's ``tasks``, without reading
    their files again. Rows of this run whose own file could not be written (storage failed)
    override what is on disk; if the merged file cannot be written either, the rows are still
    returned for the summary."""
    return save_checkpoint(checkpoint.updated(task_rows(tasks, this_run))).rows()


def save_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """Write it if it changed; a storage failure is reported, not raised (the per-shard files
    stay the truth, and the next plan reads what this one could not record)."""
    try:
        checkpoint.save()
    except OSError as exc:
        print(f"could not write {checkpoint_url(checkpoint.marker_dir)}: {exc}", file=sys.stderr, flush=True)
    return checkpoint


def print_summary(rows: list[dict], run_dir: str, unit: str = "samples", show_failed: int = 10,
                  notes: list[str] = ()) -> None:
    """The run's last lines: counts by status, then each failed shard and why (a scheduler's
    log shows what to look at without opening the manifest), then ``notes`` (inputs not found,
    withdrawals)."""
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    totals = {k: sum(r.get(k) or 0 for r in rows) for k in ("samples_in", "samples_ok", "samples_error")}
    print(f"done: shards {by_status}; {unit} in {totals['samples_in']}, ok {totals['samples_ok']}, "
          f"error {totals['samples_error']}; outputs under {run_dir}", file=sys.stderr, flush=True)
    failed = [r for r in rows if r["status"] == "failed"]
    for row in failed[:show_failed]:
        print(f"failed: {row['input_shard']}: [{row.get('error_kind') or '?'}] {row.get('error')}",
              file=sys.stderr, flush=True)
    if len(failed) > show_failed:
        print(f"... and {len(failed) - show_failed} more failed shard(s); see {run_dir}/manifest.parquet",
              file=sys.stderr, flush=True)
    if failed:
        print(f"{len(failed)} shard(s) failed: rerun the same command to redo them", file=sys.stderr, flush=True)
    for note in notes:
        print(note, file=sys.stderr, flush=True)
