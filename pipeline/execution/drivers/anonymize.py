"""The anonymize/augment driver: resolve the configuration, plan from completion markers and
listings, withdraw what was made from inputs that are gone, hold the run directory's lock, run
the shards on the workers (``pipeline.execution.pool``), merge and summarise.

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
"""
from __future__ import annotations

import posixpath
import sys


from pipeline.config.job import JobConfig, model_fingerprint
from pipeline.engine.tasks import EvalTask, ShardTask
from pipeline.errors import UserError
from pipeline.execution.planning import plan_inputs
from pipeline.execution.run_lock import RunLock
from pipeline.execution.upgrade import upgrade_run_dir
from pipeline.execution.withdrawal import Withdrawal, forget_in_stored, remove, withdraw
from pipeline.io.pseudonyms import default_secret_path, load_or_create_secret, secret_fingerprint
from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA, MANIFEST_SCHEMA
from pipeline.execution.actors import ShardWorker
from pipeline.execution.drivers.common import (RunPlan, evaluation_dirs, expand_inputs, list_inputs, merge_manifest,
                                               missing_note, print_summary, rows_of_inputs, withdrawal_failures,
                                               write_run_files)
from pipeline.execution.drivers.evaluation import write_eval_settings
from pipeline.execution.pool import WorkerPool


def resolve_config(cfg: JobConfig) -> JobConfig:
    """Expand the inputs and pin the model's identity into the (hashed) configuration."""
    from pipeline.models.source import check_model_dir, resolve_model_dir

    from pipeline.execution.file_inputs import check_output_outside, image_inputs

    roots = image_inputs(cfg.run.inputs)
    if roots is not None:
        check_output_outside(roots, cfg.run.output)
    elif cfg.publication.output_format == "files":
        raise UserError("--output-format files writes the outputs of image files: give a folder of images or image "
                        "files as --input (shards keep --output-format webdataset)")
    model_dir = resolve_model_dir(cfg.run.model)
    check_model_dir(model_dir)
    cfg.method_plugin.check_model(cfg, model_dir)
    secret = publication_secret(cfg)
    inputs = {"inputs": roots, "input_kind": "files"} if roots is not None else {"inputs": expand_inputs(cfg.run.inputs)}
    return cfg.replace(**inputs, model_fingerprint=model_fingerprint(model_dir),
                       key_fingerprint=secret_fingerprint(secret) if secret else "",
                       boxes_fingerprint=check_boxes_file(cfg))


def check_boxes_file(cfg: JobConfig) -> str:
    """A supplied boxes file is read once here, so a bad one fails before any work; its
    fingerprint goes into the hash (other boxes, other outputs)."""
    if not cfg.regions.boxes_file:
        return ""
    from pipeline.io.pairs import file_fingerprint
    from pipeline.regions.boxes import BadBoxes
    from pipeline.regions.detectors import read_boxes_file

    try:
        read_boxes_file(cfg.regions.boxes_file)
    except (BadBoxes, OSError) as exc:
        raise UserError(f"--boxes-file {cfg.regions.boxes_file}: {exc}") from None
    return file_fingerprint(cfg.regions.boxes_file)


def publication_secret(cfg: JobConfig) -> bytes | None:
    """The secret that names pseudonymized outputs (created on first use), else None. It goes
    to the workers with their setup and is never written into the run directory."""
    if not cfg.pseudonymized:
        return None
    return load_or_create_secret(cfg.publication.key_secret or default_secret_path(), output=cfg.run.output)


def plan_run(cfg: JobConfig, states: dict | None = None) -> RunPlan:
    """Which shards still need work: those with no manifest row, a ``failed`` one, or one made
    from other content (an edited, replaced or completed input: its content version changed).
    ``ok`` and ``truncated`` shards of unchanged inputs are final. Inputs named that do not
    exist are ``missing`` (nothing is recorded for them); inputs processed before that no longer
    exist are ``gone`` (to withdraw). Costs listing pages and changed manifest files, not a
    request per shard (``pipeline.execution.planning``)."""
    run_dir = cfg.run_dir
    plan = plan_inputs(cfg.run.inputs, posixpath.join(run_dir, "manifest"), states=states)
    tasks = [ShardTask.for_shard(run_dir, s.url, s.size, s.version) for s in plan.pending]
    return RunPlan(run_dir, tasks, plan.skipped, plan.missing, plan.checkpoint, plan.gone, plan.changed)


def withdraw_gone(plan: RunPlan, keep: bool = False) -> Withdrawal:
    """Withdraw what was made from each ``gone`` input (``pipeline.execution.withdrawal``): its output shard,
    rows, face rows, the scores of every evaluation of it, then its manifest file; ``keep``
    (--keep-orphans) only reports them."""
    if not plan.gone:
        return Withdrawal()
    eval_dirs = [] if keep else evaluation_dirs(plan.run_dir)

    def files(url: str) -> list[str]:
        task = ShardTask.for_shard(plan.run_dir, url)
        out = [task.output_url, task.rows_url, task.faces_url]
        for eval_dir in eval_dirs:
            scored = EvalTask.for_shard(eval_dir, url, task.output_url)
            out += [scored.rows_url, scored.features_url, scored.manifest_url]
        return out

    result = withdraw(plan.checkpoint, plan.gone, files, keep)
    names = [posixpath.basename(ShardTask.for_shard(plan.run_dir, url).manifest_url) for url in result.withdrawn]
    for eval_dir in eval_dirs:
        forget_in_stored(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA, names)
    return result


def unpublish_changed(tasks: list, changed: set[str]) -> None:
    """The published output of an input whose content changed was made from content that no
    longer exists (a sample erased, an image edited): it is removed before the shard is redone,
    so it is not published while the redo waits or if the redo fails."""
    for task in tasks:
        if task.input_url in changed:
            remove(task.output_url)


def run_job(cfg: JobConfig) -> list[dict]:
    """Process every pending shard of ``cfg`` and withdraw what was made from inputs that are
    gone; returns the merged manifest rows of ``cfg``'s inputs (plus a failed row per input
    whose withdrawal failed)."""

    return run_resolved(resolve_config(cfg))


def run_resolved(cfg: JobConfig) -> list[dict]:
    """``run_job`` for a configuration ``resolve_config`` made (its ``run_dir`` is the run's)."""
    check_scoring(cfg)
    if cfg.identity.k_same:
        from pipeline.execution.drivers.k_same import run_k_same

        return run_k_same(cfg, publication_secret(cfg))
    if cfg.run.input_kind == "files":
        return run_files_job(cfg)
    states = list_inputs(cfg.run.inputs)
    with RunLock(cfg.run_dir):
        upgrade_run_dir(cfg.run_dir)          # written by an older version: today's column types, once
        plan = plan_run(cfg, states)
        withdrawal = withdraw_gone(plan, cfg.execution.keep_orphans)
        unpublish_changed(plan.pending, plan.changed)
        write_run_files(cfg, plan, withdrawal)
        print(f"run directory {plan.run_dir}: {len(plan.pending)} shard(s) to process, {len(plan.skipped)} already done"
              + (f", {len(plan.missing)} not found" if plan.missing else "")
              + (f", {len(plan.gone)} gone" if plan.gone else ""), file=sys.stderr, flush=True)
        this_run = run_tasks(cfg, plan.pending)
        rows = rows_of_inputs(merge_manifest(plan.checkpoint, plan.pending, this_run), cfg.run.inputs)
    rows += withdrawal_failures(withdrawal)
    print_summary(rows, plan.run_dir, notes=missing_note(plan.missing) + withdrawal.summary_lines())
    return rows


def check_scoring(cfg: JobConfig) -> None:
    """Missing metric or loop-recognizer weights fail here, before any work."""
    if cfg.metrics is not None and cfg.metrics.enabled():
        from metrics.suite import check_available

        check_available(cfg.metrics)          # missing weights fail here, before any work
    if cfg.privacy.privacy_target:
        from metrics.suite import RECOGNIZERS, MetricSettings, check_available

        check_available(MetricSettings.build(recognizers=tuple(n for n in cfg.privacy.loop_recognizers if n in RECOGNIZERS),
                                             fid=False, fidelity=False))      # "structure" needs no weights


def run_tasks(cfg: JobConfig, tasks: list, here: bool = False) -> list[dict]:
    """Run the pending tasks on the workers (or, ``here``, in this process); their manifest rows."""
    if cfg.metrics is not None and cfg.metrics.enabled():
        write_eval_settings(posixpath.join(cfg.run_dir, cfg.metrics.eval_dir_name()), cfg.metrics)
    if here:
        from pipeline.execution.file_inputs import run_here

        return run_here(cfg, tasks, publication_secret(cfg))
    config_hash = cfg.config_hash()       # hashing copies the config, inputs included: once, not per shard
    with WorkerPool(ShardWorker, (cfg, cfg.method_plugin, publication_secret(cfg)), **cfg.worker_options()) as pool:
        return pool.run(tasks, MANIFEST_SCHEMA, failed_extra={"config_hash": config_hash})


def run_files_job(cfg: JobConfig) -> list[dict]:
    """``run_job`` for a folder of images or image files (``pipeline.execution.file_inputs``):
    the same lock, run files, withdrawal, engine and merge, planned per group of files."""
    from pipeline.execution.file_inputs import (clear_unfinished, list_roots, plan_files, rows_of_roots, runs_here,
                                                withdraw_gone_groups)

    listings = list_roots(cfg.run.inputs)        # none with an image: exit 2 before the run directory is touched
    with RunLock(cfg.run_dir):
        upgrade_run_dir(cfg.run_dir)          # written by an older version: today's column types, once
        plan = plan_files(cfg, listings)
        keep = cfg.execution.keep_orphans
        withdrawal = withdraw_gone_groups(plan, cfg, [] if keep else evaluation_dirs(plan.run_dir), keep)
        clear_unfinished(plan, cfg)
        write_run_files(cfg, plan, withdrawal)
        print(f"run directory {plan.run_dir}: {plan.images} image file(s) in {len(plan.pending) + len(plan.skipped)} "
              f"group(s): {len(plan.pending)} to process, {len(plan.skipped)} already done"
              + (f"; {plan.ignored} other file(s) ignored" if plan.ignored else "")
              + (f"; {len(plan.missing)} input(s) not found" if plan.missing else "")
              + (f"; {len(plan.gone)} group(s) gone" if plan.gone else ""), file=sys.stderr, flush=True)
        this_run = run_tasks(cfg, plan.pending, here=bool(plan.pending) and runs_here(cfg, plan))
        rows = rows_of_roots(merge_manifest(plan.checkpoint, plan.pending, this_run), cfg.run.inputs)
    rows += withdrawal_failures(withdrawal)
    print_summary(rows, plan.run_dir, unit="images", notes=missing_note(plan.missing) + withdrawal.summary_lines())
    where = "files" if cfg.publication.output_format == "files" else "shards"
    print(f"outputs: {posixpath.join(plan.run_dir, where)}/ (publishable); which file each came from: "
          f"{posixpath.join(plan.run_dir, 'rows')}/ (source_path, output_file: keep it private)", file=sys.stderr,
          flush=True)
    return rows
