"""Planning a rerun in requests, not in shards: one planner for every job kind. No Ray.

Each task's manifest file (``<dir>/<name>.parquet``, written last: ``steps.completion``) is
the truth a crashed run leaves behind, but reading them all costs a request per shard. The
checkpoint beside them (``<dir>.parquet``: the run's ``manifest.parquet``) holds their rows
together with the version each file had when its rows were taken (ETag, or modification time,
inode and size: ``io.listing.entry_version``). Loading it lists the directory (a request per
thousand files), keeps the rows of files whose version is unchanged, reads only files that are
new or changed, and drops the rows of files that are gone. So it gives exactly what reading
every file gives (a file redone since, or written by a run that crashed before its merge, wins
because its version changed), at O(listing pages + changed files) requests.

After a run the driver updates the checkpoint with the rows its tasks returned (no file is read
again for them: they are what the files hold, or what storage failed to take) and writes it
once. Inputs' existence and content versions come from listings too (``plan_inputs``).
"""
from __future__ import annotations

import base64
import io
import json
import logging
import posixpath
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.listing import entry_version, list_directory, object_entries, object_state, object_states, one_entry
from pipeline.io.records import rows_table, write_parquet_atomic
from pipeline.io.row_types import read_rows_file
from pipeline.io.schemas import MANIFEST_SCHEMA

log = logging.getLogger(__name__)

META_KEY = b"pipeline.checkpoint"      # where each row came from: {"names", "versions", "counts"} (zlib, base64)
FINAL = ("ok", "truncated")
READ_THREADS = 16                      # concurrent reads of changed files on object stores


def checkpoint_url(marker_dir: str) -> str:
    """``<run_dir>/manifest`` -> ``<run_dir>/manifest.parquet``."""
    return marker_dir.rstrip("/") + ".parquet"


@dataclass
class Checkpoint:
    """The rows of every finished Parquet file directly under ``marker_dir``, file by file in
    name order (``names``, ``versions``, ``counts``: the rows each file gave)."""
    marker_dir: str
    schema: pa.Schema
    table: pa.Table
    names: list[str] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    changed: bool = False              # differs from what ``checkpoint_url`` holds
    files_read: int = 0                # files read by the last load or update (not covered by the checkpoint)

    @classmethod
    def load(cls, marker_dir: str, schema: pa.Schema) -> "Checkpoint":
        return cls.stored(marker_dir, schema).refreshed()

    @classmethod
    def empty(cls, marker_dir: str, schema: pa.Schema) -> "Checkpoint":
        return cls(marker_dir, schema, schema.empty_table(), changed=True)

    @classmethod
    def stored(cls, marker_dir: str, schema: pa.Schema) -> "Checkpoint":
        """The checkpoint file as written (empty if there is none or it cannot be used: then
        every file is read once, and the next write replaces it)."""
        url = checkpoint_url(marker_dir)
        try:
            fs, path = fsspec.core.url_to_fs(url)
            data = fs.cat_file(path)
        except FileNotFoundError:
            return cls.empty(marker_dir, schema)
        try:
            metadata = pq.ParquetFile(io.BytesIO(data)).schema_arrow.metadata or {}
            where = json.loads(zlib.decompress(base64.b64decode(metadata[META_KEY])))
            table = read_rows_file(io.BytesIO(data), schema)
            names, versions, counts = where["names"], where["versions"], where["counts"]
            if not len(names) == len(versions) == len(counts) or sum(counts) != table.num_rows:
                raise ValueError("its index does not match its rows")
        except Exception as exc:       # written before checkpoints had an index, or damaged
            log.warning("%s is not a usable checkpoint (%s); its files are read again", url, exc)
            return cls.empty(marker_dir, schema)
        return cls(marker_dir, schema, table, names, versions, counts)

    def refreshed(self, known: dict[str, list[dict]] | None = None) -> "Checkpoint":
        """What the directory holds now: this checkpoint's rows for files whose version is
        unchanged, ``known`` rows for the files named (the rows a run's tasks returned), and
        every other new or changed file read."""
        known = known or {}
        fs, directory = fsspec.core.url_to_fs(self.marker_dir)
        listed = {posixpath.basename(p): entry_version(e) for p, e in list_directory(fs, directory).items()
                  if p.endswith(".parquet") and not posixpath.basename(p).startswith(".") and e.get("type") != "directory"}
        kept: dict[str, tuple] = {}        # name -> (version, first row in self.table, count)
        start = 0
        for name, version, count in zip(self.names, self.versions, self.counts):
            if version is not None and listed.get(name) == version and name not in known:
                kept[name] = (version, start, count)
            start += count
        to_read = sorted(n for n in listed if n not in kept and n not in known)
        read = dict(zip(to_read, self._read_files(fs, directory, to_read)))
        read = {n: t for n, t in read.items() if t is not None}       # gone since the listing
        known_table = rows_table([r for n in sorted(known) for r in known[n]], self.schema)
        combined = pa.concat_tables([self.table, known_table, *read.values()]).combine_chunks()
        pieces, at = dict(kept), self.table.num_rows      # name -> (version, first row in combined, count)
        for name in sorted(known):
            pieces[name] = (listed.get(name), at, len(known[name]))
            at += len(known[name])
        for name, table in read.items():
            pieces[name] = (listed[name], at, table.num_rows)
            at += table.num_rows
        order = sorted(pieces)
        rows = [i for n in order for i in range(pieces[n][1], pieces[n][1] + pieces[n][2])]
        result = Checkpoint(self.marker_dir, self.schema, combined.take(pa.array(rows, pa.int64())),
                            order, [pieces[n][0] for n in order], [pieces[n][2] for n in order])
        result.files_read = len(read)
        result.changed = self.changed or len(kept) != len(self.names) or bool(known) or bool(read)
        return result

    def _read_files(self, fs, directory: str, names: list[str]) -> list[pa.Table | None]:
        def read(name: str) -> pa.Table | None:
            try:
                return read_rows_file(io.BytesIO(fs.cat_file(posixpath.join(directory, name))), self.schema)
            except FileNotFoundError:
                return None
        local = {"file", "local", "memory"} & set([fs.protocol] if isinstance(fs.protocol, str) else fs.protocol)
        if local or len(names) < 2:
            return [read(n) for n in names]
        with ThreadPoolExecutor(READ_THREADS) as pool:        # object stores: requests overlap
            return list(pool.map(read, names))

    def updated(self, known: dict[str, list[dict]]) -> "Checkpoint":
        """After a run (under its lock): with the rows its tasks returned. Without any, no
        task wrote since this checkpoint was loaded, so nothing is listed again."""
        return self.refreshed(known) if known else self

    def forget(self, names) -> None:
        """Drop the rows of these files (the caller deleted them)."""
        gone = set(names) & set(self.names)
        if not gone:
            return
        keep, start = [], 0
        for name, count in zip(self.names, self.counts):
            if name not in gone:
                keep.extend(range(start, start + count))
            start += count
        idx = [i for i, n in enumerate(self.names) if n not in gone]
        self.table = self.table.take(pa.array(keep, pa.int64()))
        self.names, self.versions, self.counts = ([xs[i] for i in idx] for xs in (self.names, self.versions, self.counts))
        self.changed = True

    def save(self) -> None:
        """Write ``checkpoint_url`` if it changed (raises OSError if storage fails)."""
        if not self.changed:
            return
        where = json.dumps({"names": self.names, "versions": self.versions, "counts": self.counts}).encode()
        index = base64.b64encode(zlib.compress(where))      # names share prefixes: a tenth of the size
        metadata = {**(self.schema.metadata or {}), META_KEY: index}     # the schema's own (pandas) kept
        write_parquet_atomic(self.table.replace_schema_metadata(metadata), checkpoint_url(self.marker_dir))
        self.changed = False

    def latest(self, key: str, *columns: str) -> dict:
        """``row[key] -> (row[c] for c in columns)``; of rows sharing a key, the one from the
        file last in name order (as reading the files in order would give)."""
        values = [self.table.column(c).to_pylist() for c in (key, *columns)]
        return {row[0]: row[1:] for row in zip(*values)}

    def files_of(self, key: str = "input_shard") -> dict:
        """``row[key] -> the name of the file its latest row came from``."""
        values, out, start = self.table.column(key).to_pylist(), {}, 0
        for name, count in zip(self.names, self.counts):
            for value in values[start:start + count]:
                out[value] = name
            start += count
        return out

    def rows(self, key: str = "input_shard") -> list[dict]:
        """One row per key, in key order: the merged manifest."""
        keys = self.table.column(key).to_pylist()
        last = {k: i for i, k in enumerate(keys)}
        order = [last[k] for k in sorted(last, key=lambda k: (k is None, k or ""))]
        return self.table.take(pa.array(order, pa.int64())).to_pylist()


def task_rows(tasks, rows) -> dict[str, list[dict]]:
    """This run's rows by the name of their task's manifest file (rows name their task by
    ``input_shard``, which is the task's ``input_url``)."""
    file_of = {task.input_url: posixpath.basename(task.manifest_url) for task in tasks}
    return {file_of[row["input_shard"]]: [row] for row in rows}


class InputState(NamedTuple):
    url: str
    size: int | None           # None: storage would not say (the worker finds out what is wrong)
    version: str | None        # ``io.listing.content_version``: recorded in the task's manifest row


@dataclass
class InputPlan:
    pending: list[InputState]
    skipped: list[str]
    missing: list[str]         # named now, not there, never processed: nothing to do, no row written
    gone: list[str]            # processed before (a row in the checkpoint), not there now: to withdraw
    changed: set[str]          # pending because their content changed since their final row
    checkpoint: Checkpoint


def plan_inputs(inputs, marker_dir: str, schema: pa.Schema = MANIFEST_SCHEMA,
                config_hash: str | None = None, states: dict[str, tuple | None] | None = None) -> InputPlan:
    """Input shards still to process: no manifest row, a ``failed`` one, one made from other
    content (its ``input_version`` differs from the listing's ``content_version``: an edited,
    replaced or completed input; a row without a version, written before versions were kept,
    is redone once) or, when ``config_hash`` is given, with other settings. ``ok`` and
    ``truncated`` rows of unchanged inputs are final.

    ``gone``: inputs of the checkpoint's rows that no longer exist, today's inputs or not (a
    run directory may be fed different ``--input`` on different nights: an input merely not
    named today is left alone). Existence comes from listings, one request per page: today's
    (``states``, from ``io.listing.object_states`` if not given) and one of the checkpoint's
    other inputs where there are any; each input found gone is asked once more on its own, so
    a listing that lags behind writes never withdraws an input that exists."""
    states = object_states(inputs) if states is None else states
    found_again: dict[str, tuple] = {}       # said gone by a listing, there when asked on its own
    checkpoint = Checkpoint.load(marker_dir, schema)
    done = checkpoint.latest("input_shard", "status", "input_version", "config_hash")
    named = set(inputs)
    others = [u for u in done if u is not None and u not in named]
    try:
        other_entries = object_entries(others) if others else {}
    except Exception as exc:                 # a filesystem this machine cannot reach: nothing is known gone
        log.warning("could not list earlier inputs (%s); none of them is withdrawn", exc)
        other_entries = {}
    candidates = [u for u in inputs if states.get(u) is None and u in done]
    candidates += [u for u in others if u in other_entries and other_entries[u] is None]
    gone = []
    for url in candidates:
        entry = one_entry(url)
        if entry is None:
            gone.append(url)
        elif url in named:
            found_again[url] = object_state(entry)
    gone_set = set(gone)
    pending, skipped, missing, changed = [], [], [], set()
    for url in inputs:
        state = states.get(url) or found_again.get(url)
        if state is None:
            if url not in gone_set:
                missing.append(url)
            continue
        size, version = state
        status, version_then, hash_then = done.get(url, (None, None, None))
        if status in FINAL and version is not None and version_then == version and config_hash in (None, hash_then):
            skipped.append(url)
            continue
        pending.append(InputState(url, size, version))
        if status in FINAL and version_then is not None and version_then != version:
            changed.add(url)
    return InputPlan(pending, skipped, missing, gone, changed, checkpoint)
