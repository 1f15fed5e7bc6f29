"""The ``--identity k-same`` driver (issue 23 part 2): two stages over the same workers, under
the run directory's lock, planned and withdrawn like every job kind.

1. **Embedding**, one ``EmbeddingTask`` per input shard (``k-same/``: rows with each image's
   person and appearance embedding, its pixels at the model's resolution cached): skipped for
   shards finished from unchanged content, withdrawn for shards that are gone.
2. **Grouping**, here on the driver (``pipeline.transforms.k_same_groups.update_groups``, a pure
   function): the groups persisted in ``k-same/groups.parquet`` are kept while every member is
   still an input; a group that lost a member (erased from its shard, or its shard gone) is
   dissolved and its outputs withdrawn before anything else is published; free inputs form new
   groups among themselves. If any embedding shard failed, nothing is regrouped (its keys would
   look erased): the run stops after stage 1 with the shard failed, and the next run goes on.
3. **Surrogates**, one ``GroupTask`` per group (``shards/group-<id>.tar``, ``rows/``,
   ``manifest/``): skipped when finished with the same members from the same content
   (``members_hash``), else made again (its old output removed first).

Rows: every input is in ``rows/group-*.parquet`` (its output) or ``rows/not-grouped.parquet``
(unusable in stage 1, or waiting for enough new people to form a group), rewritten each run.

With ``--region faces`` the members are faces (stage 1 finds them), stage 2 caches each face's
surrogate crop under ``k-same/surrogates/`` instead of publishing it, and a third stage,
**composites**, one ``CompositeTask`` per input shard (``pipeline.execution.drivers.k_same_regions``),
pastes them into their images and publishes ``shards/<shard>.tar``, ``rows/``, ``faces/`` and
``manifest/`` as region-mode anonymize does; every input is in its shard's rows.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import sys
from dataclasses import dataclass

import numpy as np

from pipeline.engine.completion import remove_outputs
from pipeline.engine.tasks import CompositeTask, EmbeddingTask, EvalTask, GroupMember, GroupTask
from pipeline.errors import DUPLICATE_KEY, GROUP_WAITING
from pipeline.execution.actors import KSameWorker
from pipeline.execution.drivers.common import (RunPlan, evaluation_dirs, list_inputs, missing_note, print_summary,
                                               save_checkpoint, withdrawal_failures, write_run_files)
from pipeline.execution.drivers.evaluation import score_run
from pipeline.execution.drivers.k_same_regions import plan_composites
from pipeline.execution.planning import FINAL, Checkpoint, plan_inputs, task_rows
from pipeline.execution.pool import WorkerPool
from pipeline.execution.run_lock import RunLock
from pipeline.execution.withdrawal import TREE, forget_in_stored, remove, withdraw
from pipeline.io.schemas import (EMBEDDING_ROW_SCHEMA, EVAL_MANIFEST_SCHEMA, GROUP_MANIFEST_SCHEMA, GROUP_ROW_SCHEMA,
                                 GROUPS_SCHEMA, MANIFEST_SCHEMA)
from pipeline.io.records import rows_table, write_parquet_atomic
from pipeline.transforms.k_same_groups import Member, update_groups


def k_same_dir(run_dir: str) -> str:
    return posixpath.join(run_dir, "k-same")


def groups_url(run_dir: str) -> str:
    return posixpath.join(k_same_dir(run_dir), "groups.parquet")


def read_group_rows(run_dir: str) -> list[dict]:
    """The persisted groups' rows (``GROUPS_SCHEMA``; empty before the first grouping)."""
    import fsspec
    import pyarrow.parquet as pq

    try:
        with fsspec.open(groups_url(run_dir), "rb") as f:
            return pq.read_table(f).to_pylist()
    except FileNotFoundError:
        return []


def read_groups(run_dir: str) -> dict[str, int]:
    """The persisted groups: key -> group id (empty before the first grouping)."""
    return {row["key"]: row["group"] for row in read_group_rows(run_dir)}


def embedding_files(run_dir: str):
    """What stage 1 made from one input shard: its cached pixels (a directory) and its rows."""
    def files(url: str) -> list[str]:
        task = EmbeddingTask.for_shard(run_dir, url)
        return [task.cache_dir.rstrip("/") + TREE, task.rows_url]
    return files


def members_hash(members: list[GroupMember], versions: dict[str, str]) -> str:
    """The members and the content versions of the shards their pixels were cached from."""
    blob = json.dumps([[m.key, m.person, m.shard, versions.get(m.shard)] for m in members])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_k_same(cfg, secret: bytes | None) -> list[dict]:
    """Both stages and the grouping for a resolved configuration (``secret``: the pseudonym
    key, None with --keys keep); returns the group stage's manifest rows (plus a failed row per
    input shard whose embedding failed)."""
    states = list_inputs(cfg.run.inputs)
    with RunLock(cfg.run_dir):
        return _run(cfg, secret, states)


def _run(cfg, secret: bytes | None, states) -> list[dict]:
    run_dir, keep = cfg.run_dir, cfg.execution.keep_orphans
    plan = plan_inputs(cfg.run.inputs, posixpath.join(k_same_dir(run_dir), "manifest"), states=states)
    embeddings = [EmbeddingTask.for_shard(run_dir, s.url, s.size, s.version) for s in plan.pending]
    withdrawal = withdraw(plan.checkpoint, plan.gone, embedding_files(run_dir), keep)
    absent = set(plan.missing) | (set() if keep else set(plan.gone))
    present = [url for url in cfg.run.inputs if url not in absent]
    write_run_files(cfg, RunPlan(run_dir, embeddings, plan.skipped, plan.missing, plan.checkpoint, plan.gone,
                                 plan.changed), withdrawal)
    print(f"run directory {run_dir}: {len(embeddings)} shard(s) to embed, {len(plan.skipped)} already embedded"
          + (f", {len(plan.missing)} not found" if plan.missing else "")
          + (f", {len(plan.gone)} gone" if plan.gone else ""), file=sys.stderr, flush=True)
    config_hash = cfg.config_hash()
    pool = WorkerPool(KSameWorker, (cfg, secret), **cfg.worker_options(), n_tasks=1 << 30)
    notes = missing_note(plan.missing) + withdrawal.summary_lines()
    with pool:
        embedded = pool.run(embeddings, MANIFEST_SCHEMA, failed_extra={"config_hash": config_hash},
                            units=("shards embedded", "images"))
        manifests = save_checkpoint(plan.checkpoint.updated(task_rows(embeddings, embedded)))
        finished = manifests.latest("input_shard", "status", "input_version")
        failed = [url for url in present if finished.get(url, (None,))[0] not in FINAL]
        if failed:
            print(f"embedding failed for shard(s) {', '.join(failed[:3])}: nothing is regrouped or published this "
                  f"run (their keys would look erased); rerun to go on", file=sys.stderr, flush=True)
            rows = [{"input_shard": url, "status": "failed"} for url in failed] + withdrawal_failures(withdrawal)
            print_summary(rows, run_dir, notes=notes)
            return rows
        versions = {url: finished[url][1] for url in present}
        stage1 = read_stage1(run_dir, present)
        groups = plan_groups(cfg, stage1, versions)
        faces = cfg.regions.region == "faces"
        if faces:
            # every composite that a changed group touches is withdrawn before any group is made
            composites = plan_composites(cfg, present, versions, stage1, groups, set(plan.gone))
        else:
            waiting_rows = not_grouped_rows(groups.unusable, groups.waiting, cfg.identity.k)
            write_parquet_atomic(_rows_table(waiting_rows), posixpath.join(run_dir, "rows", "not-grouped.parquet"))
        print(f"\n{len(groups.tasks)} group(s) of at least {cfg.identity.k} people to make, {groups.n_done} already "
              f"done", file=sys.stderr, flush=True)
        this_run = pool.run(groups.tasks, GROUP_MANIFEST_SCHEMA, failed_extra={"config_hash": config_hash},
                            units=("groups", "faces" if faces else "images"))
        group_rows = save_checkpoint(groups.done.updated(task_rows(groups.tasks, this_run))).rows()
        if faces:
            rows = run_composites(pool, composites, config_hash) + [r for r in group_rows if r["status"] == "failed"]
        if cfg.metrics is not None and cfg.metrics.enabled():
            # --metrics: what jobs/evaluate.py does (outputs not scored yet or redone), on the same
            # workers once every output is made; what failed to score is scored next run.
            score_run(run_dir, cfg.metrics, pool, k_same=True, cached_sources=not faces)
        if faces:
            rows += withdrawal_failures(withdrawal) + withdrawal_failures(composites.withdrawal)
            print_summary(rows, run_dir, unit="images", notes=notes + composites.withdrawal.summary_lines())
            return rows
    rows = group_rows + withdrawal_failures(withdrawal)
    if waiting_rows:
        notes.append(f"{len(waiting_rows)} input(s) not published: unusable or waiting for enough new people to form "
                     f"a group (rows/not-grouped.parquet)")
    print_summary(rows, run_dir, unit="images", notes=notes)
    return rows


def run_composites(pool, composites, config_hash: str) -> list[dict]:
    """--region faces, stage 3: the composite tasks; returns the merged composite manifest."""
    print(f"\n{len(composites.tasks)} shard(s) to composite, {composites.n_done} already done",
          file=sys.stderr, flush=True)
    made = pool.run(composites.tasks, GROUP_MANIFEST_SCHEMA, failed_extra={"config_hash": config_hash},
                    units=("shards composited", "images"))
    return save_checkpoint(composites.done.updated(task_rows(composites.tasks, made))).rows()


def read_stage1(run_dir: str, present: list[str]) -> list[dict]:
    """Stage 1's rows of the present shards."""
    table = save_checkpoint(Checkpoint.load(posixpath.join(k_same_dir(run_dir), "rows"), EMBEDDING_ROW_SCHEMA)).table
    wanted = set(present)
    return [row for row in table.to_pylist() if row["input_shard"] in wanted]


def read_members(rows: list[dict]) -> tuple[dict[str, Member], dict[str, GroupMember], list[dict]]:
    """Of stage 1's rows: the usable members (for grouping and for their tasks) and the rows of
    the unusable ones. With --region faces a member is a regenerated face; the rows of pixelated
    faces and of images without a face are neither (the composite stage reads them)."""
    members, refs, unusable = {}, {}, []
    for row in rows:
        if row["status"] == "ok" and row["cache_url"] is None:          # not a member (--region faces)
            continue
        if row["status"] == "ok" and row["key"] in members:        # one key in two shards: one person, two images?
            row = {**row, "status": "error", "error_kind": DUPLICATE_KEY,
                   "error": f"the key is also in {refs[row['key']].shard}: a group member must be one image"}
        if row["status"] != "ok":
            unusable.append(row)
            continue
        members[row["key"]] = Member(row["key"], row["person"], np.asarray(row["embedding"], np.float32))
        refs[row["key"]] = GroupMember(row["key"], row["person"], row["input_shard"], row["cache_url"])
    return members, refs, unusable


@dataclass
class GroupPlan:
    """The groups of a run: the group tasks to run, the group manifest checkpoint, how many
    groups are done, every group's members hash, the member key -> group id, and the members
    in no group (waiting, and the rows of the unusable ones)."""
    tasks: list[GroupTask]
    done: Checkpoint
    n_done: int
    hashes: dict[int, str]
    assignment: dict[str, int]
    waiting: list[GroupMember]
    unusable: list[dict]


def plan_groups(cfg, rows: list[dict], versions: dict[str, str]) -> GroupPlan:
    """Update and persist the groups of stage 1's ``rows``, withdraw the dissolved ones, and
    plan the group tasks."""
    run_dir, faces = cfg.run_dir, cfg.regions.region == "faces"
    members, refs, unusable = read_members(rows)
    previous = read_group_rows(run_dir)
    update = update_groups({r["key"]: r["group"] for r in previous}, list(members.values()), cfg.identity.k)
    done = Checkpoint.load(GroupTask.manifest_dir(run_dir, faces), GROUP_MANIFEST_SCHEMA)
    made = done.latest("input_shard", "status", "members_hash")
    # Dissolved groups' outputs go before the new grouping is recorded (an erased person's
    # surrogate is never published again, whatever happens next).
    forgotten, eval_dirs = [], evaluation_dirs(run_dir) if update.dissolved else []
    for gid in sorted(update.dissolved):
        stale = GroupTask.for_group(run_dir, gid, faces=faces)
        scores = [] if faces else [EvalTask.for_shard(d, stale.input_url, stale.output_url) for d in eval_dirs]
        remove(stale.published)
        remove_outputs(stale.rows_url, stale.manifest_url,
                       *(url for s in scores for url in (s.rows_url, s.features_url, s.manifest_url)))
        forgotten.append(posixpath.basename(stale.manifest_url))
    done.forget(forgotten)
    if faces:        # and the composites that show their faces (redone once the faces have new groups)
        for shard in sorted({r["input_shard"] for r in previous if r["group"] in update.dissolved}):
            remove(CompositeTask.for_inputs(run_dir, shard, None).output_url)
    else:
        for eval_dir in eval_dirs:          # its scores describe outputs that are gone: out of every report
            forget_in_stored(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA, forgotten)
    groups: dict[int, list[GroupMember]] = {}
    for key, gid in sorted(update.assignment.items()):
        groups.setdefault(gid, []).append(refs[key])
    write_parquet_atomic(_groups_table([(m, gid) for gid, ms in groups.items() for m in ms]), groups_url(run_dir))
    tasks, n_done, hashes = [], 0, {}
    for gid, group in sorted(groups.items()):
        task = GroupTask.for_group(run_dir, gid, group, members_hash(group, versions), faces=faces)
        hashes[gid] = task.members_hash
        if made.get(task.input_url, (None, None)) == ("ok", task.members_hash):
            n_done += 1
            continue
        if task.input_url in made:
            remove(task.published)          # made from other content: not published while redone
        tasks.append(task)
    return GroupPlan(tasks, done, n_done, hashes, update.assignment, [refs[k] for k in update.waiting], unusable)


def not_grouped_rows(unusable: list[dict], waiting: list[GroupMember], k: int) -> list[dict]:
    rows = [{"key": r["key"], "source_key": r["source_key"], "status": "error", "error": r["error"],
             "error_kind": r["error_kind"], "input_shard": r["input_shard"]} for r in unusable]
    rows += [{"key": m.key, "source_key": m.key, "status": "error", "error_kind": GROUP_WAITING,
              "input_shard": m.shard, "error": f"fewer than {k} new people to form a group with; published once a "
                                               f"later run brings enough"} for m in waiting]
    return rows


def _rows_table(rows: list[dict]):
    return rows_table(rows, GROUP_ROW_SCHEMA)


def _groups_table(entries: list[tuple[GroupMember, int]]):
    return rows_table([{"key": m.key, "person": m.person, "group": gid, "input_shard": m.shard}
                       for m, gid in entries], GROUPS_SCHEMA)
