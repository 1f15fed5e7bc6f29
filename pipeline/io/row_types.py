"""Rows written before the Parquet columns were typed (2026-12), read as if written today.

Until then ``finished_at`` was ISO-8601 text, ``dropped_fields`` comma-joined text and
``privacy_trials`` JSON text. ``conform`` turns those columns of a table into today's types
(``pipeline.io.schemas``), by column name and only where the file holds the old type, so any of
the project's tables goes through it unchanged otherwise; ``read_rows_file`` reads one file that
way, aligned to a schema (columns a file predates come back null). The run directory's files are
rewritten in today's types on the next run (``pipeline.execution.upgrade``); the readers go
through ``conform`` too, so a run directory no run has touched since still reads.
"""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.schemas import TIMESTAMP, TRIALS


def finished_at(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def dropped_fields(text: str | None) -> list[str] | None:
    return None if text is None else [name for name in text.split(",") if name]


def privacy_trials(text: str | None) -> list[dict] | None:
    """The JSON list of trials as TRIALS values (``distances``: recognizer -> distance)."""
    if text is None:
        return None
    return [{**trial, "distances": list((trial.get("distances") or {}).items())} for trial in json.loads(text)]


# column -> (its type today, the function from its old text)
LEGACY_TEXT = {
    "finished_at": (TIMESTAMP, finished_at),
    "dropped_fields": (pa.list_(pa.string()), dropped_fields),
    "privacy_trials": (TRIALS, privacy_trials),
}


def legacy_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` that still hold text where today's files hold a type."""
    return [name for name in LEGACY_TEXT if name in schema.names
            and (pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type))]


def conform(table: pa.Table) -> pa.Table:
    """``table`` with its old text columns converted to today's types (schema metadata kept)."""
    for name in legacy_columns(table.schema):
        kind, parse = LEGACY_TEXT[name]
        values = pa.array([parse(v) for v in table.column(name).to_pylist()], type=kind)
        table = table.set_column(table.schema.get_field_index(name), pa.field(name, kind), values)
    return table


def aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (conformed) as ``schema``: its columns in order, cast; a column it lacks is null."""
    table = conform(table)
    columns = [table.column(f.name).cast(f.type) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def read_rows_file(source, schema: pa.Schema | None = None) -> pa.Table:
    """One Parquet file (a path or file object) in today's types; as ``schema`` when given."""
    table = pq.read_table(source)
    return aligned(table, schema) if schema is not None else conform(table)
