"""Withdrawing what was made from inputs that are gone. No Ray.

Scheduled regeneration is how erasure requests are honoured: a person asks to be removed, the
sample (or its whole shard) is deleted from the inputs, and the next run must stop publishing
what was made from it. An input that was edited is redone (``planning.plan_inputs`` sees its
content version change); an input that is gone has its files withdrawn here, in the run that
finds it gone.

For each gone input, its published output goes first, then the rest of its audit trail
(rows, faces, scores), and its manifest file last. A run that dies part-way leaves the manifest
file, so the next run finds the input gone again and finishes the withdrawal; a file that
cannot be deleted keeps the manifest file too (the failure is reported and retried). Then the
input's rows leave the checkpoint the caller saves.
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Callable

import fsspec

from pipeline.execution.planning import Checkpoint

log = logging.getLogger(__name__)

TREE = "/"        # a URL ending in this names a directory to remove with everything under it


@dataclass
class Withdrawal:
    withdrawn: list[str] = field(default_factory=list)    # inputs whose files and rows were withdrawn
    samples: int = 0                                       # their manifest rows' samples_ok
    outputs: int = 0                                       # their manifest rows' outputs_ok
    kept: list[str] = field(default_factory=list)          # gone, kept by --keep-orphans
    failed: list[tuple[str, str]] = field(default_factory=list)   # (input, why): retried by the next run

    def log_entry(self) -> dict:
        """What ``runs.jsonl`` records."""
        return {"withdrawn": len(self.withdrawn), "withdrawn_samples": self.samples, "withdrawn_inputs": self.withdrawn,
                "gone_kept": len(self.kept), "withdraw_failed": len(self.failed)}

    def summary_lines(self) -> list[str]:
        lines = []
        if self.withdrawn:
            lines.append(f"withdrawn: {len(self.withdrawn)} shards, {self.samples} samples ({self.outputs} outputs) "
                         f"made from inputs that are gone: {_few(self.withdrawn)}")
        if self.kept:
            lines.append(f"gone: {len(self.kept)} input(s) no longer exist; their outputs are kept (--keep-orphans): "
                         f"{_few(self.kept)}")
        for url, why in self.failed[:10]:
            lines.append(f"failed: withdrawing {url}: {why} (the next run tries again)")
        return lines


def withdraw(checkpoint: Checkpoint, gone: list[str], files: Callable[[str], list[str]],
             keep: bool = False) -> Withdrawal:
    """Delete ``files(input)`` (published first; a URL ending in ``/`` is a directory) and then
    the manifest file of each gone input, and forget its rows in ``checkpoint``. With ``keep``
    nothing is deleted: the inputs are only reported."""
    result = Withdrawal()
    if keep:
        result.kept = list(gone)
        return result
    counts = checkpoint.latest("input_shard", "samples_ok", "outputs_ok")
    file_of = checkpoint.files_of("input_shard")
    forgotten = []
    for url in gone:
        name = file_of[url]
        try:
            for target in files(url):
                remove(target)
            remove(posixpath.join(checkpoint.marker_dir, name))
        except Exception as exc:
            log.error("could not withdraw the outputs of %s: %s", url, exc)
            result.failed.append((url, f"{type(exc).__name__}: {exc}"))
            continue
        forgotten.append(name)
        result.withdrawn.append(url)
        samples, outputs = counts[url]
        result.samples += samples or 0
        result.outputs += outputs or 0
    checkpoint.forget(forgotten)
    return result


def remove(url: str) -> None:
    """Delete one file (or, for a URL ending in ``/``, a directory tree); already gone is fine."""
    fs, path = fsspec.core.url_to_fs(url.rstrip("/"))
    try:
        if url.endswith(TREE):
            fs.rm(path, recursive=True)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        pass


def forget_in_stored(marker_dir: str, schema, names: list[str]) -> None:
    """Drop the rows of deleted manifest files from a checkpoint beside them, if there is one
    (read and written once; a later load would drop them too, as it drops any file gone)."""
    stored = Checkpoint.stored(marker_dir, schema)
    if not stored.names:
        return
    stored.forget(names)
    stored.save()


def _few(urls: list[str], n: int = 3) -> str:
    return ", ".join(urls[:n]) + (f" and {len(urls) - n} more" if len(urls) > n else "")
