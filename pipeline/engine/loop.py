"""The one shard engine: every task of every job kind runs through ``run_task``. No Ray.

A task's source (``pipeline.engine.sources``) yields chunks on a reader thread, ahead of the
model; the transform (``pipeline.transforms``) turns each chunk's items into ``Produced``
outputs on the calling thread (the model's); a writer thread, fed by encoder threads, hands
their samples to the task's sinks (tar shards, in key order where outputs are pseudonyms;
files by key). The engine keeps the rows (error rows of bad inputs included), the side tables,
the in-pass scores, and the counts, then writes, in this order: the sinks, the rows, the side
tables, the transform's extra files, the in-pass scoring's files and manifest, and last the
task's manifest row, its completion marker (``pipeline.engine.completion``). Memory is bounded
by a chunk, whatever the shard or dataset size.
"""
from __future__ import annotations

import posixpath
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from pipeline.engine.completion import SHARD_COUNTS, run_to_completion
from pipeline.engine.overlap import BackgroundWriter, Prefetcher, StageClock
from pipeline.errors import GENERATION_FAILED, SCORING_FAILED
from pipeline.io.records import rows_table, write_bytes_atomic, write_parquet_atomic
from pipeline.io.shards import AtomicShardWriter
from pipeline.io.spool import KeyOrderedWriter

# Errors that are not the data's fault: the task is marked failed so the next run redoes it.
REDO_KINDS = (GENERATION_FAILED, SCORING_FAILED)


@dataclass(frozen=True)
class TarSink:
    """Samples into one WebDataset shard; ``key_ordered``: written in key order (pseudonyms:
    input order would link each output to its source)."""
    url: str
    key_ordered: bool = False

    def open(self):
        writer = AtomicShardWriter(self.url)
        return writer, (KeyOrderedWriter(writer) if self.key_ordered else writer)


@dataclass(frozen=True)
class KeyFiles:
    """One file per sample, named by ``url_of(key)``, holding its one field's bytes."""
    url_of: Callable[[str], str]

    def open(self):
        return None, self

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        (data,) = fields.values()
        write_bytes_atomic(data, self.url_of(key))


@dataclass(frozen=True)
class FileSink:
    """One image file per output under ``directory``, at ``names[key]`` (a pseudonym and the
    format's suffix, or the input's relative path: checked safe when listed, and checked again
    here so no name can leave the directory). The list of every file the task may write is
    written first (``list_url``): what a redo, a withdrawal or the next run after a kill
    removes, whether or not the task finished. Each file appears whole
    (``pipeline.io.storage``); only the image is written (how it was made is in the rows)."""
    directory: str
    list_url: str
    names: dict[str, str]

    def open(self):
        import json

        for name in self.names.values():
            _check_relative(name)
        write_bytes_atomic(json.dumps({"files": sorted(self.names.values())}).encode(), self.list_url)
        return FileWriter(self), self

    def url_of(self, name: str) -> str:
        return posixpath.join(self.directory, _check_relative(name))

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        from pipeline.io.fields import is_image_field

        (data,) = [v for k, v in fields.items() if is_image_field(k)]
        write_bytes_atomic(data, self.url_of(self.names[key]))

    def remove_all(self) -> None:
        """Every file of the list (the task failed: nothing of it stays published)."""
        from pipeline.engine.completion import remove_outputs

        remove_outputs(*(self.url_of(n) for n in self.names.values()))


class FileWriter:
    """The context of a ``FileSink`` in one task: on an error, what it wrote is removed."""

    def __init__(self, sink: FileSink):
        self.sink = sink

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.sink.remove_all()


def _check_relative(name: str) -> str:
    from pipeline.io.sample_keys import unsafe_name_reason

    reason = unsafe_name_reason(name)
    if reason is not None:
        raise ValueError(f"output file name {name!r} is not a safe relative path: {reason}")
    return name


@dataclass
class TaskFiles:
    """Where one task's results go: its rows file, side tables and extra files by name, its
    sample sinks by name, and what adds the task's own columns to each row (``annotate``)."""
    rows: str | None = None
    side: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    sinks: dict[str, object] = field(default_factory=dict)
    annotate: Callable[[dict], dict] | None = None

    def urls(self) -> tuple[str, ...]:
        """Every file the task writes besides its manifest (cleaned before, removed on failure)."""
        return tuple(u for u in (*(s.url for s in self.sinks.values() if isinstance(s, TarSink)), self.rows,
                                 *self.side.values(), *self.files.values()) if u)


@dataclass
class InPassScoring:
    """Outputs scored in the same pass (``--metrics``): a scoring transform and its own task."""
    transform: object
    task: object
    files: TaskFiles
    worker: str


def run(task, transform, *, progress: Callable[[int], None] = lambda n: None, scoring: InPassScoring | None = None,
        key_ordered: bool = False, max_member_bytes: int | None = None, image_field: str | None = None,
        **manifest_context) -> dict:
    """Run any task (``pipeline.engine.tasks``) through ``transform``: what it reads, writes and
    records comes from the task; ``manifest_context`` adds columns to its manifest row (the
    config hash, the worker)."""
    reading = {k: v for k, v in (("max_member_bytes", max_member_bytes), ("image_field", image_field)) if v is not None}
    return run_task(task, transform, task.source(transform, **reading), task.files(transform, key_ordered=key_ordered),
                    manifest_schema=task.manifest_schema, manifest_base=task.manifest_base(**manifest_context),
                    row_base=task.row_base(), scoring=scoring, progress=progress, counts=task.counts)


def run_task(task, transform, source, files: TaskFiles, *, manifest_schema, manifest_base: dict,
             row_base: dict | None = None, scoring: InPassScoring | None = None,
             progress: Callable[[int], None] = lambda n: None, counts: tuple[str, ...] = SHARD_COUNTS) -> dict:
    """Run ``task`` through ``transform`` and write everything it produces; returns its manifest row."""
    def body() -> dict:
        try:
            return _run(task, transform, source, files, {**(row_base or {}), **transform.row_base()}, scoring,
                        progress)
        except BaseException:
            for sink in files.sinks.values():
                if isinstance(sink, FileSink):
                    sink.remove_all()          # written after its writer closed: rows or side tables failed
            raise
    return run_to_completion(task, manifest_schema, files.urls(), body, manifest_base, counts)


def _run(task, transform, source, files: TaskFiles, row_base: dict, scoring: InPassScoring | None, progress) -> dict:
    transform.begin(task)
    if scoring is not None:
        scoring.transform.begin(scoring.task)
    rows: list[dict] = []
    side: dict[str, list[dict]] = {name: [] for name in transform.side_schemas}
    scored: list[dict] = []
    inputs = inputs_ok = 0
    clock = StageClock()
    annotate = files.annotate or (lambda row: row)
    with ExitStack() as stack:
        shards, writers = {}, {}
        for name, sink in files.sinks.items():
            shard, writer = sink.open()
            if shard is not None:
                shards[name] = stack.enter_context(shard)
            writers[name] = writer
        chunks = stack.enter_context(Prefetcher(source.chunks, clock))
        writer = stack.enter_context(BackgroundWriter(writers, clock))
        for chunk in chunks:
            inputs += chunk.inputs
            rows.extend(annotate({**row_base, **r}) for r in chunk.rows)
            ok: dict[int, bool] = {}
            pairs = []
            for produced in transform.process(chunk.items) if chunk.items else ():
                row = {**row_base, **produced.row}
                if produced.fields is not None:
                    writer.write(row["key"], produced.fields, produced.sink)
                for name, extra in produced.side.items():
                    side[name].extend(extra)
                if produced.pair is not None and scoring is not None:
                    pairs.append(_scoring_item(row, produced.pair))
                if produced.item is not None:
                    ok[produced.item] = ok.get(produced.item, True) and row["status"] == "ok"
                rows.append(annotate(row))
            inputs_ok += sum(ok.values())
            if pairs:
                scored.extend(p.row for p in scoring.transform.process(pairs))
            progress(chunk.inputs)
        writer.close()
        started = time.perf_counter()
        for writer_of_sink in writers.values():
            if isinstance(writer_of_sink, KeyOrderedWriter):
                writer_of_sink.finish()              # the sorted shard is written here
        clock.write += time.perf_counter() - started
    if files.rows is not None:
        write_parquet_atomic(rows_table(rows, transform.row_schema), files.rows)
    for name, url in files.side.items():
        write_parquet_atomic(rows_table(side[name], transform.side_schemas[name]), url)
    for name, data in transform.finish().items():
        write_bytes_atomic(data, files.files[name])
    if scoring is not None:
        _finish_scoring(scoring, scored)
    return {**outcome(rows, inputs, inputs_ok, source.error, transform), **transform.manifest_extra(rows),
            **clock.columns()}


def outcome(rows: list[dict], inputs: int, inputs_ok: int, source_error: str | None, transform) -> dict:
    """A task's status, error and counts from its rows: failed when an output failed for a reason
    that is not the data's (redone next run), truncated when its input ended early."""
    failed = [r["error_kind"] for r in rows if r.get("error_kind") in REDO_KINDS]
    counts = {"samples_in": inputs, "samples_ok": inputs_ok, "samples_error": inputs - inputs_ok,
              "outputs_ok": sum(r["status"] == "ok" for r in rows),
              "outputs_error": sum(r["status"] == "error" for r in rows)}
    what = "generation" if failed and failed[0] == GENERATION_FAILED else "scoring"
    return {"status": "failed" if failed else "truncated" if source_error else "ok",
            "error": f"{len(failed)} output(s) failed in {what}; see rows" if failed else source_error,
            "error_kind": failed[0] if failed else None, **transform.manifest_counts(counts)}


def _scoring_item(row: dict, pair: tuple):
    from pipeline.engine.sources import ScoringItem

    source, output = pair
    return ScoringItem(row["key"], row["source_key"], row["t"], row.get("variant") or 0, source, output)


def _finish_scoring(scoring: InPassScoring, rows: list[dict]) -> dict:
    """The in-pass scores' rows, features and manifest row (their own completion marker)."""
    from pipeline.engine.completion import SCORING_COUNTS
    from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA

    transform, task, files = scoring.transform, scoring.task, scoring.files

    def complete() -> dict:
        write_parquet_atomic(rows_table(rows, transform.row_schema), files.rows)
        for name, data in transform.finish().items():
            write_bytes_atomic(data, files.files[name])
        return outcome(rows, len(rows), 0, None, transform)
    return run_to_completion(task, EVAL_MANIFEST_SCHEMA, files.urls(), complete,
                             {"input_shard": task.input_url, "output_shard": task.output_url, "worker": scoring.worker},
                             counts=SCORING_COUNTS)
