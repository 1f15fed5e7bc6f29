"""Run directories written before the Parquet columns were typed (2026-12), brought up to date
once, under the run directory's lock, by whichever run or evaluation takes it next.

Their rows, face rows and manifests (checkpoints and evaluation manifests included) held
``finished_at``, ``dropped_fields`` and ``privacy_trials`` as text; each such file is rewritten
in today's types (``pipeline.io.row_types``), atomically, its schema metadata kept, and nothing
else changes: the run directory's name (its configuration hash), its shards and which work
counts as done stay as they were, so the rerun that upgrades is as incremental as any other.
``format.json`` records that the directory is up to date, so later runs list nothing.
"""
from __future__ import annotations

import json
import posixpath
import sys

import fsspec
import pyarrow.parquet as pq

from pipeline.io.records import write_bytes_atomic, write_parquet_atomic
from pipeline.io.row_types import conform, legacy_columns
from pipeline.io.schemas import FACE_COUNTS, nullable_ints_for_pandas

FORMAT_FILE = "format.json"
PARQUET_TYPES = 2          # 1: text finished_at, dropped_fields, privacy_trials; 2: typed


def upgrade_run_dir(run_dir: str) -> int:
    """Rewrite the run directory's Parquet files still in the old types; returns how many were
    rewritten. Call it holding the run directory's lock (``pipeline.execution.run_lock``)."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    try:                                   # up to date: this one request is all it costs
        if json.loads(fs.cat_file(posixpath.join(root, FORMAT_FILE))).get("parquet_types", 0) >= PARQUET_TYPES:
            return 0
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    rewritten, failed = 0, []
    for path in sorted(fs.find(root)) if fs.exists(root) else []:
        if not path.endswith(".parquet") or posixpath.basename(path).startswith("."):
            continue
        try:
            with fs.open(path, "rb") as f:
                if not legacy_columns(pq.read_schema(f)):
                    continue
            with fs.open(path, "rb") as f:
                table = pq.read_table(f)
            table = conform(table)
            if any(c in table.schema.names for c in FACE_COUNTS):        # pandas: Int64 face counts, as new files
                table = table.replace_schema_metadata(nullable_ints_for_pandas(table.schema).metadata)
            write_parquet_atomic(table, fs.unstrip_protocol(path) if "://" in run_dir else path)
            rewritten += 1
        except OSError as exc:        # left as it was: readers take both types; the next run tries again
            failed.append(f"{path} ({type(exc).__name__}: {exc})")
    if rewritten:
        print(f"run directory {run_dir}: {rewritten} Parquet file(s) written by an older version rewritten in "
              f"today's column types (nothing redone)", file=sys.stderr, flush=True)
    if failed:
        print(f"run directory {run_dir}: {len(failed)} Parquet file(s) of an older version could not be rewritten, "
              f"e.g. {failed[0]}; they are read as they are", file=sys.stderr, flush=True)
        return rewritten
    try:
        write_bytes_atomic(json.dumps({"parquet_types": PARQUET_TYPES}).encode(), posixpath.join(run_dir, FORMAT_FILE))
    except OSError:                   # an unwritable directory fails where the run writes, with its own message
        pass
    return rewritten
