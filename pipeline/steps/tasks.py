"""A unit of work: one input shard and the three files it produces. No heavy imports, so
the Ray driver can plan a run without loading torch."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipeline.io.shards import SHARD_SUFFIXES, shard_name


@dataclass(frozen=True)
class ShardTask:
    input_url: str
    output_url: str
    rows_url: str
    manifest_url: str
    input_bytes: int | None = None
    input_version: str | None = None       # io.listing.content_version of the input when planned

    @classmethod
    def for_shard(cls, run_dir: str, input_url: str, input_bytes: int | None = None,
                  input_version: str | None = None) -> "ShardTask":
        name = shard_name(input_url)
        stem = next((name[: -len(sfx)] for sfx in SHARD_SUFFIXES if name.endswith(sfx)), name)
        # Outputs are plain tars whatever the input's compression.
        return cls(input_url, posixpath.join(run_dir, "shards", f"{stem}.tar"), posixpath.join(run_dir, "rows", f"{stem}.parquet"),
                   posixpath.join(run_dir, "manifest", f"{stem}.parquet"), input_bytes, input_version)

    @property
    def faces_url(self) -> str:
        """Per-face rows (--region faces), beside the rows: ``<run_dir>/faces/<stem>.parquet``."""
        run_dir, name = posixpath.split(posixpath.dirname(self.rows_url))[0], posixpath.basename(self.rows_url)
        return posixpath.join(run_dir, "faces", name)

