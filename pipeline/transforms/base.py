"""What a job kind supplies to the one shard engine (``pipeline.engine``): a per-batch transform.

The engine reads a task's input (an input shard, an output shard beside its sources, a group of
cached inversions), decodes it in chunks, hands each chunk to the transform, and does
everything else for every job kind: error rows for bad samples, ordered and overlapped
writing, rows and side tables, in-pass scoring, the manifest row last. A transform only turns
items into ``Produced`` outputs. No Ray, no files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from pipeline.io.images import PreparedImage
from pipeline.io.shards import RawSample


class Decoded(NamedTuple):
    """One usable input sample: the raw sample, the field its image came from, the image."""
    sample: RawSample
    field: str
    image: PreparedImage


@dataclass(frozen=True)
class DecodeSpec:
    """How the engine decodes a shard's images for a transform: at ``resolution`` (None: the
    image's own shorter side), or at their own size (``keep_size``, face regions)."""
    resolution: int | None
    min_side: int
    max_pixels: int
    image_field: str | None = None
    keep_size: bool = False


@dataclass
class Produced:
    """One output a transform made (or failed to make): its row; the fields to publish under
    ``row["key"]`` into the sink named ``sink`` (pixel arrays are encoded by the writer, by
    field name); rows for side tables (``faces``); the (source, output) pixels to score in the
    same pass; and the index in its chunk of the input it came from (an input counts as ok
    when every output made from it is)."""
    row: dict
    fields: dict | None = None
    sink: str = "shards"
    side: dict[str, list[dict]] = field(default_factory=dict)
    pair: tuple | None = None
    item: int | None = None


class Transform:
    """A job kind's per-batch work. The engine calls ``process`` once per chunk of decoded items
    (in input order), then ``finish`` once; ``manifest_extra`` adds columns to the manifest row."""
    row_schema: pa.Schema                       # the task's rows file
    side_schemas: dict[str, pa.Schema] = {}     # side tables by name (written beside the rows)
    decode: DecodeSpec | None = None            # None: items are not decoded images (the source says what they are)
    chunk_size: int = 16                        # items per ``process`` call

    def begin(self, task) -> None:
        """Called once before a task's first chunk (a transform that names files after its task)."""

    def select(self, sample: RawSample) -> dict | None:
        """None to decode and process ``sample``; else the row recorded for it instead (the
        interpolation stage skips images no pair uses)."""
        return None

    def row_base(self) -> dict:
        """Columns every row of a task starts with (error rows of bad samples included)."""
        return {}

    def process(self, items: list) -> list[Produced]:
        raise NotImplementedError

    def finish(self) -> dict[str, bytes]:
        """Extra files of the task by output name (e.g. ``features``), written before the manifest."""
        return {}

    def manifest_counts(self, counts: dict) -> dict:
        """The manifest's count columns from the engine's (samples and outputs ok / error)."""
        return counts

    def manifest_extra(self, rows: list[dict]) -> dict:
        return {}
