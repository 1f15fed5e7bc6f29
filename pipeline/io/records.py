"""Writing and reading rows as Parquet files (schemas: ``pipeline.io.schemas``). Files appear
only when complete, like shards (``pipeline.io.storage``)."""
from __future__ import annotations

import io
import posixpath

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.storage import write_bytes


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def write_bytes_atomic(data: bytes, url: str) -> None:
    """Readers never see a partial file: one upload to the final name on object stores, a
    hidden temporary renamed elsewhere (removed if the write fails: ``pipeline.io.storage``)."""
    fs, path = fsspec.core.url_to_fs(url)
    write_bytes(fs, path, data)


def write_parquet_atomic(table: pa.Table, url: str) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes_atomic(buf.getvalue(), url)


def finished_files(url: str, suffix: str) -> list[str]:
    """URLs of the files directly under ``url`` ending in ``suffix``, skipping hidden
    temporaries of unfinished writes (empty if the directory does not exist yet)."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return []
    return [fs.unstrip_protocol(f) if "://" in url else f for f in sorted(fs.ls(path, detail=False))
            if f.endswith(suffix) and not posixpath.basename(f).startswith(".")]


def read_parquet_dir(url: str, schema: pa.Schema) -> list[dict]:
    """The rows of every finished (non-hidden) Parquet file directly under ``url``, as ``schema``
    (files written before its columns were typed included: ``pipeline.io.row_types``)."""
    from pipeline.io.row_types import read_rows_file

    out: list[dict] = []
    for file in finished_files(url, ".parquet"):
        with fsspec.open(file, "rb") as f:
            out.extend(read_rows_file(f, schema).to_pylist())
    return out
