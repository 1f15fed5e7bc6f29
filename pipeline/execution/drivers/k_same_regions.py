"""``--identity k-same --region faces``: the composite stage's plan (the driver's part; no Ray).

One ``CompositeTask`` per present input shard: its images' recorded boxes (stage 1's rows),
and for each regenerated face its group and surrogate crop, or why it has none. The task's
``composite_hash`` names the input's content version, every face's group and that group's
``members_hash``, and every face's reason for having none: a shard is skipped when it finished
with the same hash, and redone otherwise, its old outputs withdrawn here, before any group is
made, so nothing made from a dissolved group (an erased member's) stays published. Composites
of shards no longer present (gone, or named but not found) are withdrawn: their faces left their
groups. A gone shard kept by --keep-orphans keeps its faces in their groups and its composite
while nothing changes, and loses the composite when something does (it cannot be redone).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

from pipeline.engine.tasks import CompositeFace, CompositeImage, CompositeTask, GroupTask
from pipeline.errors import GROUP_WAITING
from pipeline.execution.planning import FINAL, Checkpoint
from pipeline.execution.withdrawal import Withdrawal, remove, withdraw
from pipeline.io.schemas import GROUP_MANIFEST_SCHEMA
from pipeline.regions.boxes import FaceBox


@dataclass
class CompositePlan:
    tasks: list[CompositeTask]
    done: Checkpoint
    n_done: int
    withdrawal: Withdrawal


def composite_files(run_dir: str):
    def files(url: str) -> list[str]:
        task = CompositeTask.for_inputs(run_dir, url, None)
        return [task.output_url, task.rows_url, task.faces_url]
    return files


def recorded_images(rows: list[dict]) -> dict[str, dict[str, CompositeImage]]:
    """Stage 1's rows by input shard: each image's boxes in face order, or its error."""
    boxes: dict[tuple[str, str], list] = {}
    errors: dict[tuple[str, str], dict] = {}
    for row in rows:
        where = (row["input_shard"], row["source_key"])
        if row["face"] is None:
            boxes.setdefault(where, [])
            if row["status"] != "ok":
                errors[where] = row
            continue
        box = FaceBox(row["x0"], row["y0"], row["x1"], row["y1"], row["score"], row["detector"] or "")
        boxes.setdefault(where, []).append((row["face"], box))
    out: dict[str, dict[str, CompositeImage]] = {}
    for (shard, key), faces in boxes.items():
        error = errors.get((shard, key))
        image = (CompositeImage(key, (), error["error_kind"], error["error"]) if error is not None else
                 CompositeImage(key, tuple(b for _, b in sorted(faces, key=lambda f: f[0]))))
        out.setdefault(shard, {})[key] = image
    return out


def face_states(run_dir: str, groups, k: int) -> dict[str, CompositeFace]:
    """Every member key of the run: its group and surrogate, or why it has none."""
    out = {key: CompositeFace(key, gid, GroupTask.for_group(run_dir, gid, faces=True).cache_url(key))
           for key, gid in groups.assignment.items()}
    for m in groups.waiting:
        out[m.key] = CompositeFace(m.key, error_kind=GROUP_WAITING,
                                   error=f"a face has fewer than {k} new people to form a group with; published once "
                                         f"a later run brings enough")
    for row in groups.unusable:
        if row["face"] is not None:                   # a face that is no member (an image's error is the image's)
            out[row["key"]] = CompositeFace(row["key"], error_kind=row["error_kind"], error=row["error"])
    return out


def composite_hash(version: str | None, images: list[CompositeImage], faces: list[CompositeFace],
                   hashes: dict[int, str]) -> str:
    blob = json.dumps([version, [[i.key, [[b.x0, b.y0, b.x1, b.y1] for b in i.boxes], i.error_kind] for i in images],
                       [[f.key, f.group, hashes.get(f.group), f.error_kind] for f in faces]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_composites(cfg, present: list[str], versions: dict[str, str], rows: list[dict], groups,
                    gone: set[str] = frozenset()) -> CompositePlan:
    """The composite tasks of the ``present`` shards (``gone``: those kept by --keep-orphans,
    whose composite is kept while its hash holds and withdrawn otherwise: it cannot be redone
    without its input)."""
    run_dir = cfg.run_dir
    done = Checkpoint.load(posixpath.join(run_dir, "manifest"), GROUP_MANIFEST_SCHEMA)
    made = done.latest("input_shard", "status", "members_hash")
    images_of, states = recorded_images(rows), face_states(run_dir, groups, cfg.identity.k)
    by_shard: dict[str, list[CompositeFace]] = {}
    for row in rows:
        if row["face"] is not None and row["key"] in states:
            by_shard.setdefault(row["input_shard"], []).append(states[row["key"]])
    tasks, n_done, stale = [], 0, [url for url in made if url not in set(present)]
    for url in present:
        images = sorted(images_of.get(url, {}).values(), key=lambda i: i.key)
        faces = sorted(by_shard.get(url, []), key=lambda f: f.key)
        task = CompositeTask.for_inputs(run_dir, url, versions[url], images, faces,
                                        composite_hash(versions[url], images, faces, groups.hashes))
        status, previous = made.get(url, (None, None))
        if status in FINAL and previous == task.composite_hash:
            n_done += 1
        elif url in gone:
            if url in made:
                stale.append(url)
        else:
            if url in made:
                remove(task.output_url)        # made from other groups or content: not published while redone
            tasks.append(task)
    return CompositePlan(tasks, done, n_done, withdraw(done, stale, composite_files(run_dir)))
