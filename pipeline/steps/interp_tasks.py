"""The two kinds of work of a pair-interpolation run and the files each produces. No heavy
imports, so the Ray driver plans without torch.

Stage 1, one ``InversionTask`` per input shard: every image a pair uses is decoded and
DDIM-inverted once, in the shard it lives in, into ``inversions/cache/<shard>/<hash of key>.safetensors``.
Stage 2, one ``PairTask`` per group of pairs: the two cached inversions of each pair are read
by key (from whichever shards they came from) and its frames are decoded into one output shard.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipeline.io.pairs import ImageRef, Pair
from pipeline.io.sample_keys import key_file_name
from pipeline.io.shards import SHARD_SUFFIXES, shard_name


def shard_stem(url: str) -> str:
    name = shard_name(url)
    return next((name[: -len(sfx)] for sfx in SHARD_SUFFIXES if name.endswith(sfx)), name)


@dataclass(frozen=True)
class InversionTask:
    input_url: str
    cache_dir: str
    rows_url: str
    features_url: str
    manifest_url: str
    input_bytes: int | None = None
    wanted: frozenset[str] | None = None     # keys some pair uses (None: every image)
    input_version: str | None = None         # io.listing.content_version of the input when planned

    @classmethod
    def for_shard(cls, run_dir: str, input_url: str, input_bytes: int | None = None,
                  wanted: frozenset[str] | None = None, input_version: str | None = None) -> "InversionTask":
        stem, inv = shard_stem(input_url), posixpath.join(run_dir, "inversions")
        return cls(input_url, posixpath.join(inv, "cache", stem), posixpath.join(inv, "rows", f"{stem}.parquet"),
                   posixpath.join(inv, "features", f"{stem}.npz"), posixpath.join(inv, "manifest", f"{stem}.parquet"),
                   input_bytes, wanted, input_version)

    def cache_url(self, key: str) -> str:
        """Named by a hash of the key: a key is data from the shard, never a path."""
        return posixpath.join(self.cache_dir, key_file_name(key, ".safetensors"))


@dataclass(frozen=True)
class PairTask:
    name: str                                 # pairs-<group index>: the name of its output shard
    pairs: tuple[Pair, ...]
    refs: tuple[ImageRef, ...]                # the inversion (or the error) of every key its pairs use
    pairs_hash: str
    output_url: str
    rows_url: str
    features_url: str
    manifest_url: str

    @classmethod
    def for_group(cls, run_dir: str, index: int, pairs: list[Pair], refs: list[ImageRef],
                  pairs_hash: str) -> "PairTask":
        name = f"pairs-{index:06d}"
        return cls(name, tuple(pairs), tuple(refs), pairs_hash, posixpath.join(run_dir, "shards", f"{name}.tar"),
                   posixpath.join(run_dir, "rows", f"{name}.parquet"), posixpath.join(run_dir, "features", f"{name}.npz"),
                   posixpath.join(run_dir, "manifest", f"{name}.parquet"))

    @property
    def input_url(self) -> str:       # what progress and failure messages call the task
        return self.name
