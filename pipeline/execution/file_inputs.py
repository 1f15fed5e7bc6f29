"""Driver side of image-file inputs (a folder of photos, or photos named one by one): telling
them from shards, planning a rerun per group of files, withdrawing what was made from groups
that are gone, clearing what unfinished tasks wrote, and running a small input in this process
instead of starting Ray. No Ray import here.

A folder's files are cut into content-defined groups (``pipeline.io.image_files``): each group
is a task with its own manifest row and content version, so

* a no-op rerun lists the folder once and reads the checkpoint: every group is skipped;
* an edited or added photo changes its group's version: the group's old outputs are removed
  and the group is redone (only that group: about ``FILES_PER_TASK`` photos);
* a deleted photo changes its group too (its output goes with the redo), and a group that is
  no longer there at all (its first file deleted, or the whole folder gone) is withdrawn:
  its published files or shard, rows, face rows and scores, then its manifest file;
* a task killed mid-way leaves its file list (written before any output file): the next run
  removes every file on it before anything is redone or withdrawn, so nothing made from a
  photo deleted meanwhile stays published.
"""
from __future__ import annotations

import json
import os
import posixpath
import sys
from dataclasses import dataclass, field

import fsspec

from pipeline.engine.tasks import EvalTask, FileGroupTask
from pipeline.errors import UserError
from pipeline.execution.planning import FINAL, Checkpoint
from pipeline.execution.withdrawal import Withdrawal, forget_in_stored, remove, withdraw
from pipeline.io.image_files import (Listing, group_files, group_url, image_suffixes, is_image_file, is_local,
                                     list_image_files, local_path, split_group_url)
from pipeline.io.sample_keys import unsafe_name_reason
from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA, MANIFEST_SCHEMA
from pipeline.io.shards import SHARD_SUFFIXES

IN_PROCESS_MAX_IMAGES = 16    # pending images up to which a run without a cluster runs here, without Ray


def image_inputs(inputs) -> tuple[str, ...] | None:
    """The roots of an image-file run (folders and image files, local paths made absolute), or
    None when ``inputs`` name shards (brace patterns, tars, directories holding tars: as before)."""
    roots, shards = [], []
    for spec in inputs:
        if "{" in spec or "," in spec or spec.endswith(SHARD_SUFFIXES):
            shards.append(spec)
        elif is_image_file(spec):
            roots.append(spec)
        elif _is_image_folder(spec):
            roots.append(spec)
        else:
            shards.append(spec)
    if roots and shards:
        raise UserError(f"--input mixes image files or folders ({roots[0]}) with shards ({shards[0]}): give one kind "
                        f"per run")
    if not roots:
        return None
    return tuple(os.path.abspath(local_path(r)) if is_local(r) else r.rstrip("/") for r in roots)


def _is_image_folder(spec: str) -> bool:
    """A directory holding no shard directly (a directory of tars is read as shards, as before)."""
    fs, path = fsspec.core.url_to_fs(spec)
    try:
        if not fs.isdir(path):
            return False
        names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    except (FileNotFoundError, PermissionError):
        return False
    return not any(n.endswith(SHARD_SUFFIXES) for n in names)


def check_output_outside(roots, output: str) -> None:
    """Outputs written inside an input folder would be read as inputs by the next run."""
    if not is_local(output):
        return
    out = os.path.realpath(local_path(output))
    for root in roots:
        if is_local(root) and os.path.isdir(root):
            real = os.path.realpath(root)
            if out == real or os.path.commonpath([out, real]) == real:
                raise UserError(f"--output {output} lies inside the input folder {root}: the next run would take the "
                                f"outputs for photos; write them elsewhere")


def list_roots(roots) -> dict[str, Listing | None]:
    """Each root's listing, taken before the run directory is touched: when no root holds an
    image (a wrong path, an unmounted disk) the run stops with a user error, as for shards."""
    listings = {root: list_image_files(root) for root in roots}
    if not any(listing and listing.entries for listing in listings.values()):
        there = [r for r, listing in listings.items() if listing is not None]
        why = (f"no image file ({', '.join(s.lstrip('.') for s in image_suffixes())}) in {there[0]}" if there
               else f"{roots[0]} does not exist")
        raise UserError(f"--input: {why}; check the path (nothing was written)")
    return listings


@dataclass
class FilePlan:
    run_dir: str
    pending: list[FileGroupTask]
    skipped: list[str]
    missing: list[str] = field(default_factory=list)       # roots named that do not exist
    checkpoint: Checkpoint | None = None
    gone: list[str] = field(default_factory=list)          # groups processed before that are no longer there
    changed: set[str] = field(default_factory=set)
    images: int = 0                                        # image files listed
    ignored: int = 0                                       # other files (by suffix), hidden ones


def plan_files(cfg, listings: dict[str, Listing | None]) -> FilePlan:
    """Which groups need work (none finished, ``failed``, or another content version), which
    are done, and which groups of earlier runs are gone (of today's roots, or of other roots
    this run directory holds: listed once each; a root that still exists but is not named
    today is left alone, like a shard not named today)."""
    run_dir, output_format = cfg.run_dir, cfg.publication.output_format
    checkpoint = Checkpoint.load(posixpath.join(run_dir, "manifest"), MANIFEST_SCHEMA)
    done = checkpoint.latest("input_shard", "status", "input_version")
    today: dict[str, FileGroupTask] = {}
    for root, listing in listings.items():
        for group in group_files(listing.entries) if listing else ():
            task = FileGroupTask.for_group(run_dir, root, group, output_format)
            today[task.input_url] = task
    other_roots = {split_group_url(u)[0] for u in done if u and split_group_url(u)} - set(listings)
    there = {root: _group_urls(root, list_image_files(root)) for root in other_roots}
    gone = []
    for url in done:
        parsed = split_group_url(url) if url else None
        if parsed is None:
            continue
        root = parsed[0]
        present = set(today) if root in listings else there[root]
        if url not in present:
            gone.append(url)
    plan = FilePlan(run_dir, [], [], [r for r, listing in listings.items() if listing is None], checkpoint,
                    sorted(gone), images=sum(len(x.entries) for x in listings.values() if x),
                    ignored=sum(x.skipped for x in listings.values() if x))
    for url, task in today.items():
        status, version_then = done.get(url, (None, None))
        if status in FINAL and version_then == task.input_version:
            plan.skipped.append(url)
            continue
        plan.pending.append(task)
        if status in FINAL:
            plan.changed.add(url)
    return plan


def _group_urls(root: str, listing: Listing | None) -> set[str]:
    return {group_url(root, g.gid) for g in group_files(listing.entries)} if listing else set()


def read_file_list(url: str) -> list[str]:
    """The files a task may have written (its list, written before them); safe names only."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        names = json.loads(fs.cat_file(path))["files"]
    except FileNotFoundError:
        return []
    return [n for n in names if isinstance(n, str) and unsafe_name_reason(n) is None]


def task_outputs(task: FileGroupTask) -> list[str]:
    """Every published file of a task: its shard, or each file on its list and then the list."""
    if task.output_format == "webdataset":
        return [task.output_url]
    return [posixpath.join(task.files_dir, n) for n in read_file_list(task.file_list_url)] + [task.file_list_url]


def withdraw_gone_groups(plan: FilePlan, cfg, eval_dirs: list[str], keep: bool = False) -> Withdrawal:
    """Withdraw each gone group (``pipeline.execution.withdrawal``): published outputs first,
    then rows, face rows and scores, the manifest file last."""
    if not plan.gone:
        return Withdrawal()
    fmt = cfg.publication.output_format

    def files(url: str) -> list[str]:
        task = FileGroupTask.named(plan.run_dir, url, fmt)
        out = task_outputs(task) + [task.rows_url, task.faces_url]
        for eval_dir in eval_dirs:
            scored = EvalTask.for_shard(eval_dir, url, task.output_url)
            out += [scored.rows_url, scored.features_url, scored.manifest_url]
        return out

    result = withdraw(plan.checkpoint, plan.gone, files, keep)
    names = [posixpath.basename(FileGroupTask.named(plan.run_dir, u, fmt).manifest_url) for u in result.withdrawn]
    for eval_dir in eval_dirs:
        forget_in_stored(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA, names)
    return result


def clear_unfinished(plan: FilePlan, cfg) -> int:
    """Before any task runs: remove what was published by groups about to be redone (changed,
    failed) and by tasks killed mid-way (a file list with no finished manifest row, whether or
    not its group still exists), and (local disks) the killed writes' hidden temporaries under
    ``files/``. Returns how many files were removed."""
    removed = 0
    for task in plan.pending:
        for url in task_outputs(task):
            remove(url)
            removed += 1
    if cfg.publication.output_format != "files":
        return removed
    pending = {t.name for t in plan.pending}
    # Kept: the lists of every finished group still in the checkpoint (today's skipped ones, other
    # roots' left alone, gone ones kept by --keep-orphans or whose withdrawal failed).
    finished = {FileGroupTask.named(plan.run_dir, u).name
                for u, (status,) in plan.checkpoint.latest("input_shard", "status").items()
                if status in FINAL and u and split_group_url(u)} - pending
    orphans = 0
    lists_dir = posixpath.join(plan.run_dir, "file-lists")
    fs, path = fsspec.core.url_to_fs(lists_dir)
    from pipeline.io.listing import list_directory

    for entry in list_directory(fs, path):
        name = posixpath.basename(entry)
        if not name.endswith(".json") or name.startswith("."):
            continue
        stem = name[:-len(".json")]
        if stem in finished or stem in pending:
            continue
        orphans += 1
        url = posixpath.join(lists_dir, name)
        files_dir = posixpath.join(plan.run_dir, "files")
        for file_name in read_file_list(url):
            remove(posixpath.join(files_dir, file_name))
            removed += 1
        remove(url)
    if plan.pending or orphans:                    # a killed task's writes: walk files/ once for its temporaries
        removed += _remove_temporaries(posixpath.join(plan.run_dir, "files"))
    return removed


def _remove_temporaries(files_dir: str) -> int:
    from pipeline.io.storage import writes_atomically

    fs, path = fsspec.core.url_to_fs(files_dir)
    if writes_atomically(fs) or not fs.exists(path):
        return 0
    leftovers = [p for p in fs.find(path) if posixpath.basename(p).startswith(".") and ".tmp-" in posixpath.basename(p)]
    for p in leftovers:
        fs.rm_file(p)
    return len(leftovers)


def rows_of_roots(rows: list[dict], roots) -> list[dict]:
    wanted = set(roots)
    return [r for r in rows if r.get("input_shard") and (split_group_url(r["input_shard"]) or ("",))[0] in wanted]


def runs_here(cfg, plan: FilePlan) -> bool:
    """A few images and no cluster to join: this process runs them (no Ray start, no worker to
    load the model in; the same engine, files and manifests)."""
    if cfg.execution.address is not None or os.environ.get("RAY_ADDRESS"):
        return False
    try:
        import ray

        if ray.is_initialized():
            return False
    except ImportError:
        return True
    return sum(len(t.entries) for t in plan.pending) <= IN_PROCESS_MAX_IMAGES


def run_here(cfg, tasks: list[FileGroupTask], secret: bytes | None) -> list[dict]:
    """Run ``tasks`` one after the other in this process (``pipeline.engine.local``)."""
    import time

    from pipeline.engine.local import load_job, process_shard

    started = time.time()
    model, transform, suite = load_job(cfg, secret)
    print(f"running {sum(len(t.entries) for t in tasks)} image(s) in this process on {model.device} (no Ray cluster "
          f"for so few; model loaded in {time.time() - started:.1f} s)", file=sys.stderr, flush=True)
    return [process_shard(cfg, model, task, transform=transform, suite=suite) for task in tasks]
