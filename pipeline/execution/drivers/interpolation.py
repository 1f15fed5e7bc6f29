"""The pair-interpolation driver: both stages through ``pipeline.execution.pool``, under the run
directory's lock.

Two stages over the same workers (each loads the model once):

1. **Inversion**, one task per input shard: every image some pair uses is decoded and
   DDIM-inverted where it lives, once per run, into ``inversions/cache/``.
2. **Frames**, one task per group of ``pairs_per_shard`` pairs: the driver matches each pair's
   keys to the cached inversions (keys are looked up across all shards, which is how pairs
   spanning shards are gathered: only the small cached tensors travel, never the input shards),
   and a worker decodes the group's frames into ``shards/pairs-<n>.tar``.

Reruns: stage 1 skips shards whose inversions are finished and whose content is unchanged
(``planning.plan_inputs``), and withdraws the inversions of input shards that are gone;
stage 2 skips groups whose manifest is ``ok`` and whose pairs and inversions are the same
(``pairs_hash``). A group whose pairs used an image of a shard redone or withdrawn has another
hash: its old frames are removed and it is decoded again in the same run, without them.
"""
from __future__ import annotations

import dataclasses
import posixpath
import sys

from pipeline.errors import UserError

from pipeline.execution.pool import WorkerPool
from pipeline.execution.actors import InterpWorker
from pipeline.config.interpolation import InterpConfig
from pipeline.engine.tasks import InversionTask, PairTask
from pipeline.io.pairs import (ImageRef, consecutive_pairs, file_fingerprint, group_pairs, number_pairs, pairs_hash,
                            random_pairs, read_pairs_file, resolve_refs)
from pipeline.io.schemas import INVERSION_ROW_SCHEMA, MANIFEST_SCHEMA, PAIR_MANIFEST_SCHEMA
from pipeline.execution.run_lock import RunLock
from pipeline.execution.upgrade import upgrade_run_dir
from pipeline.methods.boomerang import check_steps
from pipeline.execution.drivers.common import (RunPlan, expand_inputs, list_inputs, merge_manifest, missing_note, print_summary,
                                     save_checkpoint, withdrawal_failures, write_run_files)
from pipeline.engine.completion import remove_outputs
from pipeline.execution.planning import FINAL, Checkpoint, plan_inputs, task_rows
from pipeline.execution.withdrawal import TREE, remove, withdraw


def resolve_interp_config(cfg: InterpConfig) -> InterpConfig:
    """Expand the inputs and pin the model's and the pairs file's identities into the hash."""
    from pipeline.config.job import model_fingerprint
    from pipeline.models.source import check_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(cfg.run.model)
    if check_model_dir(model_dir) == "cold":
        raise UserError(f"--model {cfg.run.model} is a Cold Diffusion restorer; interpolation needs a diffusion model")
    check_steps(cfg.interpolation.steps, model_dir)
    fingerprint = file_fingerprint(cfg.pairing.pairs_file) if cfg.pairing.pairs_file else ""
    return cfg.replace(inputs=expand_inputs(cfg.run.inputs), model_fingerprint=model_fingerprint(model_dir),
                       pairs_fingerprint=fingerprint)


def check_metric_weights(cfg: InterpConfig) -> None:
    """A missing metric weights file fails here, before any work."""
    from metrics.suite import MetricSettings, check_available

    frames = cfg.frame_metrics
    check_available(MetricSettings.build(fid=frames.fid, fidelity=False, lpips=frames.lpips,
                                         inception_weights=frames.inception_weights))


def made_at(finished_at) -> str | None:
    """When a shard's inversions were made, as the text pair groups were hashed with (the ISO
    form manifests held before ``finished_at`` was a timestamp): typing the column redoes no group."""
    return finished_at.isoformat() if hasattr(finished_at, "isoformat") else finished_at


def locate_inversions(run_dir: str, inputs, manifests: Checkpoint | None = None
                      ) -> tuple[dict[str, list[ImageRef]], dict[str, list[str]], list[str]]:
    """From stage 1's files: every key's inversion (or error), the keys of each shard in
    order, and the shards whose inversion failed. Manifests and rows are read through their
    checkpoints (``inversions/manifest.parquet``, ``inversions/rows.parquet``): a rerun reads
    only the files written since."""
    inv_dir = posixpath.join(run_dir, "inversions")
    if manifests is None:
        manifests = save_checkpoint(Checkpoint.load(posixpath.join(inv_dir, "manifest"), MANIFEST_SCHEMA))
    finished = manifests.latest("input_shard", "status", "finished_at")
    wanted = set(inputs)
    located: dict[str, list[ImageRef]] = {}
    keys_by_shard: dict[str, list[str]] = {url: [] for url in inputs}
    failed = [url for url in inputs if finished.get(url, (None,))[0] not in FINAL]
    unusable = set(failed)
    rows = save_checkpoint(Checkpoint.load(posixpath.join(inv_dir, "rows"), INVERSION_ROW_SCHEMA))
    for row in rows.table.select(["key", "status", "error", "input_shard", "cache_url"]).to_pylist():
        shard = row["input_shard"]
        if shard not in wanted or shard in unusable or row["status"] == "unused":
            continue
        keys_by_shard[shard].append(row["key"])
        located.setdefault(row["key"], []).append(ImageRef(
            row["key"], shard, row["cache_url"], None if row["status"] == "ok" else row["error"], made_at(finished[shard][1])))
    return located, keys_by_shard, failed


def plan_pair_tasks(cfg: InterpConfig, located, keys_by_shard, failed: list[str],
                    done: Checkpoint | None = None) -> tuple[list[PairTask], int]:
    """Every group of pairs as a task, and how many of them are already done (``done``: the
    frames stage's checkpoint, loaded here if not given; groups past the count are removed
    from storage and from it)."""
    if cfg.pairing.pairs == "file":
        raw = read_pairs_file(cfg.pairing.pairs_file)
    elif cfg.pairing.pairs == "consecutive":
        raw = consecutive_pairs(keys_by_shard)
    else:
        raw = random_pairs([k for keys in keys_by_shard.values() for k in keys], cfg.pairing.num_pairs, cfg.run.seed)
    pairs = number_pairs(raw)
    refs = resolve_refs(pairs, located)
    if failed:
        note = f" (the inversion of shard(s) {', '.join(failed[:3])} failed; a rerun redoes it)"
        refs = {k: dataclasses.replace(r, error=r.error + note) if r.shard is None else r for k, r in refs.items()}
    run_dir = cfg.run_dir
    if done is None:
        done = Checkpoint.load(posixpath.join(run_dir, "manifest"), PAIR_MANIFEST_SCHEMA)
    finished = done.latest("input_shard", "status", "pairs_hash")
    tasks, n_done = [], 0
    groups = group_pairs(pairs, cfg.pairing.pairs_per_shard)
    for i, group in enumerate(groups):
        group_refs = sorted({refs[k] for p in group for k in (p.key_a, p.key_b)}, key=lambda r: r.key)
        task = PairTask.for_group(run_dir, i, group, group_refs, pairs_hash(group, refs))
        if finished.get(task.name, (None, None)) == ("ok", task.pairs_hash):
            n_done += 1
        else:
            tasks.append(task)
    done.forget(_remove_stale_groups(run_dir, len(groups), finished))
    return tasks, n_done


def _remove_stale_groups(run_dir: str, n_groups: int, done: dict) -> list[str]:
    """Groups past the current count (the pair list shrank) would mix old frames into the run;
    returns the names of the manifest files removed."""
    removed = []
    for name in done:
        if int(name.rsplit("-", 1)[1]) >= n_groups:
            stale = PairTask.for_group(run_dir, int(name.rsplit("-", 1)[1]), [], [], "")
            remove_outputs(stale.output_url, stale.rows_url, stale.features_url, stale.manifest_url)
            removed.append(posixpath.basename(stale.manifest_url))
    return removed


def run_interpolation(cfg: InterpConfig) -> list[dict]:
    """Both stages for every pending shard and group; returns the frames stage's manifest rows
    plus a ``failed`` row per input shard whose inversion failed."""
    cfg = resolve_interp_config(cfg)
    if cfg.frame_metrics.fid or cfg.frame_metrics.lpips:
        check_metric_weights(cfg)
    states = list_inputs(cfg.run.inputs)
    with RunLock(cfg.run_dir):
        upgrade_run_dir(cfg.run_dir)          # written by an older version: today's column types, once
        return _run_stages(cfg, states)


def inversion_files(run_dir: str):
    """What stage 1 made from one input shard, published last to first: its cached inversions
    (a directory), rows and features (``pipeline.execution.withdrawal`` deletes its manifest file after)."""
    def files(url: str) -> list[str]:
        task = InversionTask.for_shard(run_dir, url)
        return [task.cache_dir.rstrip("/") + TREE, task.rows_url, task.features_url]
    return files


def _run_stages(cfg: InterpConfig, states: dict | None = None) -> list[dict]:
    run_dir = cfg.run_dir
    wanted = None
    if cfg.pairing.pairs == "file":
        wanted = frozenset(k for pair in read_pairs_file(cfg.pairing.pairs_file) for k in pair)
    plan = plan_inputs(cfg.run.inputs, posixpath.join(run_dir, "inversions", "manifest"), states=states)
    inversions = [InversionTask.for_shard(run_dir, s.url, s.size, wanted, s.version) for s in plan.pending]
    # Inputs that are gone lose their inversions here; the groups that used their images get
    # other hashes below and are decoded again without them.
    withdrawal = withdraw(plan.checkpoint, plan.gone, inversion_files(run_dir), cfg.execution.keep_orphans)
    absent = set(plan.missing) | (set() if cfg.execution.keep_orphans else set(plan.gone))
    present = [url for url in cfg.run.inputs if url not in absent]
    write_run_files(cfg, RunPlan(run_dir, inversions, plan.skipped, plan.missing, plan.checkpoint, plan.gone,
                                 plan.changed), withdrawal)
    print(f"run directory {run_dir}: {len(inversions)} shard(s) to invert, {len(plan.skipped)} already inverted"
          + (f", {len(plan.missing)} not found" if plan.missing else "")
          + (f", {len(plan.gone)} gone" if plan.gone else ""), file=sys.stderr, flush=True)
    config_hash = cfg.config_hash()           # hashing copies the config, inputs included: once, not per shard
    # Every GPU (or --num-cpu-workers): the frame stage's task count is not known yet.
    pool = WorkerPool(InterpWorker, (cfg,), **cfg.worker_options(), n_tasks=1 << 30)

    def run_stage(tasks: list, schema, units: tuple[str, str]) -> list[dict]:
        return pool.run(tasks, schema, failed_extra={"config_hash": config_hash}, units=units)

    with pool:
        inverted = run_stage(inversions, MANIFEST_SCHEMA, ("shards inverted", "images"))
        manifests = save_checkpoint(plan.checkpoint.updated(task_rows(inversions, inverted)))
        located, keys_by_shard, failed = locate_inversions(run_dir, present, manifests)
        done = Checkpoint.load(posixpath.join(run_dir, "manifest"), PAIR_MANIFEST_SCHEMA)
        made_before = set(done.latest("input_shard", "status"))
        pair_tasks, n_done = plan_pair_tasks(cfg, located, keys_by_shard, failed, done)
        for task in pair_tasks:            # frames of other pairs or images: not published while redone
            if task.name in made_before:
                remove(task.output_url)
        print(f"\n{len(pair_tasks)} group(s) of pairs to interpolate, {n_done} already done", file=sys.stderr, flush=True)
        this_run = run_stage(pair_tasks, PAIR_MANIFEST_SCHEMA, ("groups", "pairs"))
    rows = merge_manifest(done, pair_tasks, this_run) + withdrawal_failures(withdrawal)
    print_summary(rows, run_dir, unit="pairs", notes=missing_note(plan.missing) + withdrawal.summary_lines())
    if failed:
        print(f"inversion failed for shard(s) {', '.join(failed)}: their pairs are error rows; rerun to redo them",
              file=sys.stderr, flush=True)
    # Failed inversion shards count as failed work too (a scheduler should see a non-zero exit).
    return rows + [{"input_shard": url, "status": "failed"} for url in failed]
