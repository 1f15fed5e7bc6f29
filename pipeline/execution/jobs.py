"""The anonymize/augment and scoring drivers: plan from completion markers, hold the run
directory's lock, run the tasks through ``pipeline.execution.cluster``, merge and summarise.

Why Ray actors rather than Ray Data (checked against Ray 2.60): the unit of work here is a
shard: one output shard per input shard, named after it, written to a temporary name and
renamed, then its completion marker (manifest row) last. Ray Data's webdataset sink cannot
express that: it writes one tar per write task straight to its final path, named
``{dataset_uuid}_{write_uuid}_{task_index:06}.tar``, and a ``FilenameProvider`` sees only
(write_uuid, task_index), never the shard a block came from. What no longer holds is unsafe
decoding: ``read_webdataset`` now refuses ``.pkl``/``.pickle`` and ``.pt``/``.pth`` members
unless RAY_DATA_WEBDATASET_ALLOW_UNSAFE_DESERIALIZATION=1 or a custom decoder says otherwise,
and it reads these outputs as they are (tests/test_interop.py; a pickle label that augment
copied verbatim is refused like any other). Its row-id checkpointing
(``CheckpointConfig``) can resume rows, but it does not give finished shards under stable
names that a rerun skips. So each worker is an actor that loads the model once and takes
whole shards from a driver-side queue, one at a time; memory per worker is bounded by its
batch, and the driver holds only manifest rows.

Workers: one per GPU (``num_gpus=1``) when the cluster has GPUs, else ``num_cpu_workers``
CPU actors. A crashed actor is restarted and its shard retried; a shard that still fails is
recorded as ``failed`` and redone by the next run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass

import fsspec

from pipeline.execution.cluster import WorkerPool
from pipeline.execution.shard_workers import EvalWorker, ShardWorker
from pipeline.config.job import JobConfig, model_fingerprint
from pipeline.errors import UNREADABLE_SHARD, UserError
from pipeline.io.pseudonyms import default_secret_path, load_or_create_secret, secret_fingerprint
from pipeline.io.listing import MISSING
from pipeline.io.records import MANIFEST_SCHEMA
from pipeline.execution.run_lock import RunLock
from pipeline.steps.completion import SCORING_COUNTS, failed_task_row, write_failed_row
from pipeline.io.shards import expand_shard_urls, shard_name
from pipeline.steps.planning import FINAL, Checkpoint, checkpoint_url, plan_inputs, task_rows
from pipeline.steps.tasks import ShardTask

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    run_dir: str
    pending: list[ShardTask]
    skipped: list[str]
    missing: list = dataclasses.field(default_factory=list)    # tasks whose input does not exist (failed, not dispatched)
    checkpoint: Checkpoint | None = None      # the finished work it was planned from; updated by merge_manifest


def resolve_config(cfg: JobConfig) -> JobConfig:
    """Expand the inputs and pin the model's identity into the (hashed) configuration."""
    from pipeline.models.source import check_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(cfg.model)
    check_model_dir(model_dir)
    cfg.method_plugin.check_model(cfg, model_dir)
    secret = publication_secret(cfg)
    return dataclasses.replace(cfg, inputs=expand_inputs(cfg.inputs), model_fingerprint=model_fingerprint(model_dir),
                               key_fingerprint=secret_fingerprint(secret) if secret else "",
                               boxes_fingerprint=check_boxes_file(cfg))


def check_boxes_file(cfg: JobConfig) -> str:
    """A supplied boxes file is read once here, so a bad one fails before any work; its
    fingerprint goes into the hash (other boxes, other outputs)."""
    if not cfg.boxes_file:
        return ""
    from pipeline.io.pairs import file_fingerprint
    from pipeline.regions.boxes import BadBoxes
    from pipeline.regions.detectors import read_boxes_file

    try:
        read_boxes_file(cfg.boxes_file)
    except (BadBoxes, OSError) as exc:
        raise UserError(f"--boxes-file {cfg.boxes_file}: {exc}") from None
    return file_fingerprint(cfg.boxes_file)


def publication_secret(cfg: JobConfig) -> bytes | None:
    """The secret that names pseudonymized outputs (created on first use), else None. It goes
    to the workers with their setup and is never written into the run directory."""
    if not cfg.pseudonymized:
        return None
    return load_or_create_secret(cfg.key_secret or default_secret_path(), output=cfg.output)


def expand_inputs(inputs) -> tuple[str, ...]:
    """The input shard URLs; outputs are named after them, so base names must be unique."""
    shards = tuple(expand_shard_urls(list(inputs)))
    if not shards:
        raise UserError(f"--input {list(inputs)} matches no shards")
    counts = Counter(shard_name(u) for u in shards)
    clashes = sorted(n for n, c in counts.items() if c > 1)
    if clashes:
        raise UserError(f"input shards share base names {clashes[:5]}: outputs are named after inputs, so "
                         f"process each directory as its own run (or rename the shards)")
    return shards


def plan_run(cfg: JobConfig) -> RunPlan:
    """Which shards still need work: those with no manifest row, a ``failed`` one, or a
    different input size since they were processed (the input was replaced or its upload
    completed). ``ok`` and ``truncated`` shards of unchanged inputs are final. Inputs that do
    not exist are ``missing``: failed without a worker ever being asked. Costs listing pages
    and changed manifest files, not a request per shard (``pipeline.steps.planning``)."""
    run_dir = cfg.run_dir
    plan = plan_inputs(cfg.inputs, posixpath.join(run_dir, "manifest"))
    tasks = [ShardTask.for_shard(run_dir, url, size) for url, size in plan.pending]
    return RunPlan(run_dir, [t for t in tasks if t.input_bytes != MISSING],
                   plan.skipped, [t for t in tasks if t.input_bytes == MISSING], plan.checkpoint)


def write_run_files(cfg: JobConfig, plan: RunPlan) -> None:
    fs, path = fsspec.core.url_to_fs(plan.run_dir)
    fs.makedirs(path, exist_ok=True)
    with fs.open(posixpath.join(path, "config.json"), "w") as f:
        f.write(cfg.to_json())
    entry = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "pending": len(plan.pending),
             "skipped": len(plan.skipped), "missing": len(plan.missing), "argv": sys.argv}
    log_path = posixpath.join(path, "runs.jsonl")
    try:
        previous = fs.cat_file(log_path).decode()
    except FileNotFoundError:
        previous = ""
    with fs.open(log_path, "w") as f:
        f.write(previous + json.dumps(entry) + "\n")


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


def print_summary(rows: list[dict], run_dir: str, unit: str = "samples", show_failed: int = 10) -> None:
    """The run's last lines: counts by status, then each failed shard and why (a scheduler's
    log shows what to look at without opening the manifest)."""
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


def run_job(cfg: JobConfig) -> list[dict]:
    """Process every pending shard of ``cfg``; returns the run's merged manifest rows."""

    cfg = resolve_config(cfg)
    if cfg.metrics is not None and cfg.metrics.enabled():
        from metrics.suite import check_available

        check_available(cfg.metrics)          # missing weights fail here, before any work
    if cfg.privacy_target:
        from metrics.suite import RECOGNIZERS, MetricSettings, check_available

        check_available(MetricSettings(recognizers=tuple(n for n in cfg.loop_recognizers if n in RECOGNIZERS),
                                       fid=False, fidelity=False))      # "structure" needs no weights
    with RunLock(cfg.run_dir):
        plan = plan_run(cfg)
        write_run_files(cfg, plan)
        print(f"run directory {plan.run_dir}: {len(plan.pending)} shard(s) to process, {len(plan.skipped)} already done"
              + (f", {len(plan.missing)} missing" if plan.missing else ""), file=sys.stderr, flush=True)
        if cfg.metrics is not None and cfg.metrics.enabled():
            from pipeline.steps.score_shard import write_eval_settings

            write_eval_settings(posixpath.join(plan.run_dir, cfg.metrics.eval_dir_name()), cfg.metrics)
        config_hash = cfg.config_hash()       # hashing copies the config, inputs included: once, not per shard
        this_run = [record_missing(task, MANIFEST_SCHEMA, {"output_shard": task.output_url, "config_hash": config_hash})
                    for task in plan.missing]
        with WorkerPool(ShardWorker, (cfg, cfg.method_plugin, publication_secret(cfg)), **cfg.worker_options()) as pool:
            this_run += pool.run(plan.pending, MANIFEST_SCHEMA, failed_extra={"config_hash": config_hash})
        rows = merge_manifest(plan.checkpoint, plan.missing + plan.pending, this_run)
    print_summary(rows, plan.run_dir)
    return rows


def record_missing(task, schema, extra: dict) -> dict:
    """The failed row of an input shard that does not exist, written like any failed row."""
    return write_failed_row(task, failed_task_row(task, "input shard not found", UNREADABLE_SHARD, **extra), schema)


@dataclass
class EvalPlan:
    eval_dir: str
    pending: list           # EvalTasks
    skipped: list[str]      # output shards already scored
    checkpoint: Checkpoint  # the evaluation's finished work; updated by merge_manifest


def plan_evaluation(run_dir: str, settings) -> EvalPlan:
    """Output shards of a run still to score: finished shards (``ok``/``truncated``) with no
    ``ok`` evaluation, or one that scored a different number of outputs (the shard was
    regenerated since). Both sides are read from their checkpoints (``pipeline.steps.planning``)."""
    from pipeline.steps.score_shard import EVAL_MANIFEST_SCHEMA, EvalTask

    eval_dir = posixpath.join(run_dir, settings.eval_dir_name())
    checkpoint = Checkpoint.load(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA)
    scored = checkpoint.latest("output_shard", "status", "outputs_scored", "outputs_error")
    made = Checkpoint.load(posixpath.join(run_dir, "manifest"), MANIFEST_SCHEMA)
    pending, skipped = [], []
    for input_shard, (output_shard, status, outputs_ok) in made.latest("input_shard", "output_shard", "status",
                                                                       "outputs_ok").items():
        if status not in FINAL:
            continue
        prev = scored.get(output_shard)
        if prev and prev[0] == "ok" and prev[1] + prev[2] == outputs_ok:
            skipped.append(output_shard)
        else:
            pending.append(EvalTask.for_shard(eval_dir, input_shard, output_shard))
    return EvalPlan(eval_dir, pending, skipped, checkpoint)


def run_evaluation(run_dir: str, settings, *, address: str | None = None, num_gpus: int | None = None,
                   num_cpu_workers: int = 1, cpu_threads: int | None = None) -> str:
    """Score a finished run's outputs on the cluster (only shards not scored yet); returns the eval dir."""

    from metrics.suite import check_available
    from pipeline.config.job import load_run_config
    from pipeline.steps.score_shard import EVAL_MANIFEST_SCHEMA, write_eval_settings

    cfg = load_run_config(run_dir)
    check_available(settings)
    with RunLock(run_dir):
        plan = plan_evaluation(run_dir, settings)
        write_eval_settings(plan.eval_dir, settings)
        print(f"evaluation {plan.eval_dir}: {len(plan.pending)} shard(s) to score, {len(plan.skipped)} already scored",
              file=sys.stderr, flush=True)
        with WorkerPool(EvalWorker, (settings, cfg.image_field), address=address, num_gpus=num_gpus,
                        num_cpu_workers=num_cpu_workers, cpu_threads=cpu_threads) as pool:
            scored = pool.run(plan.pending, EVAL_MANIFEST_SCHEMA, counts=SCORING_COUNTS, count_key="outputs_scored")
        merge_manifest(plan.checkpoint, plan.pending, scored)
    return plan.eval_dir
