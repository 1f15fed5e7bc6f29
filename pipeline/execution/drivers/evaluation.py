"""The evaluation driver: score a finished run's output shards that are not scored yet (or whose
outputs were remade from other content) on the workers, under the run directory's lock."""
from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass


from pipeline.engine.completion import SCORING_COUNTS
from pipeline.engine.tasks import EvalTask
from pipeline.execution.planning import FINAL, Checkpoint
from pipeline.execution.run_lock import RunLock
from pipeline.execution.upgrade import upgrade_run_dir
from pipeline.io.records import write_bytes_atomic
from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA, GROUP_MANIFEST_SCHEMA, MANIFEST_SCHEMA
from pipeline.execution.actors import EvalWorker
from pipeline.execution.drivers.common import merge_manifest
from pipeline.execution.pool import WorkerPool


@dataclass
class EvalPlan:
    eval_dir: str
    pending: list           # EvalTasks
    skipped: list[str]      # output shards already scored
    checkpoint: Checkpoint  # the evaluation's finished work; updated by merge_manifest


def plan_evaluation(run_dir: str, settings, k_same: bool = False, cached_sources: bool | None = None) -> EvalPlan:
    """Output shards of a run still to score: finished shards (``ok``/``truncated``) with no
    ``ok`` evaluation, or one that scored another number of outputs or outputs made from other
    content (the job's row has another ``input_version``: the shard was regenerated from an
    edited input since, so the scores describe images that no longer exist). Both sides are
    read from their checkpoints (``pipeline.execution.planning``). A k-same run (``k_same``)
    has a row per group (per input shard with --region faces): its version is the row's
    ``members_hash`` (a group or composite redone with other members or from other content is
    scored again); with ``cached_sources`` (the default for k-same; not for --region faces,
    whose outputs are full images beside their input shards) the sources are the members'
    cached pixels."""
    cached_sources = k_same if cached_sources is None else cached_sources
    eval_dir = posixpath.join(run_dir, settings.eval_dir_name())
    checkpoint = Checkpoint.load(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA)
    scored = checkpoint.latest("output_shard", "status", "outputs_scored", "outputs_error", "input_version")
    schema, version_of = (GROUP_MANIFEST_SCHEMA, "members_hash") if k_same else (MANIFEST_SCHEMA, "input_version")
    made = Checkpoint.load(posixpath.join(run_dir, "manifest"), schema)
    pending, skipped = [], []
    for input_shard, (output_shard, status, outputs_ok, version) in made.latest(
            "input_shard", "output_shard", "status", "outputs_ok", version_of).items():
        if status not in FINAL:
            continue
        prev = scored.get(output_shard)
        if prev and prev[0] == "ok" and prev[1] + prev[2] == outputs_ok and prev[3] == version:
            skipped.append(output_shard)
        else:
            pending.append(EvalTask.for_shard(eval_dir, input_shard, output_shard, version,
                                              cached_sources=cached_sources))
    return EvalPlan(eval_dir, pending, skipped, checkpoint)


def run_evaluation(run_dir: str, settings, *, address: str | None = None, num_gpus: int | None = None,
                   num_cpu_workers: int = 1, cpu_threads: int | None = None) -> str:
    """Score a finished run's outputs on the cluster (only shards not scored yet); returns the eval dir."""

    from metrics.suite import check_available
    from pipeline.config.runs import load_run_config

    cfg = load_run_config(run_dir)
    check_available(settings)
    with RunLock(run_dir):
        upgrade_run_dir(run_dir)          # written by an older version: today's column types, once
        k_same = getattr(cfg, "identity", None) is not None and cfg.identity.k_same     # interpolation runs: none
        cached = k_same and cfg.regions.region != "faces"
        with WorkerPool(EvalWorker, (settings, cfg.images.image_field), address=address, num_gpus=num_gpus,
                        num_cpu_workers=num_cpu_workers, cpu_threads=cpu_threads) as pool:
            return score_run(run_dir, settings, pool, k_same, cached)


def score_run(run_dir: str, settings, pool, k_same: bool = False, cached_sources: bool | None = None) -> str:
    """Score what is not scored yet of a run whose lock the caller holds, on ``pool`` (its
    workers load the metric networks: ``EvalWorker``, or a k-same job's workers with
    ``--metrics``, once its groups are made); returns the eval dir. Workers start only if
    something is left to score."""
    plan = plan_evaluation(run_dir, settings, k_same, cached_sources)
    write_eval_settings(plan.eval_dir, settings)
    print(f"evaluation {plan.eval_dir}: {len(plan.pending)} shard(s) to score, {len(plan.skipped)} already scored",
          file=sys.stderr, flush=True)
    scored = pool.run(plan.pending, EVAL_MANIFEST_SCHEMA, counts=SCORING_COUNTS, count_key="outputs_scored")
    merge_manifest(plan.checkpoint, plan.pending, scored)
    return plan.eval_dir


def write_eval_settings(eval_dir: str, settings) -> None:
    """``settings.json`` of an evaluation: what was measured, with resolved thresholds and conventions."""
    from pipeline.transforms.scoring import eval_settings_json

    write_bytes_atomic(eval_settings_json(settings), posixpath.join(eval_dir, "settings.json"))
