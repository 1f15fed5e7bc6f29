"""Every kind of task the engine runs, and the files each produces: one home for them. No heavy
imports, so a Ray driver plans a run without loading torch.

* ``ShardTask``: one input shard of anonymize/augment (or the enhancement's low-resolution
  inputs) to one output shard, its rows, its face rows, its manifest row;
* ``EvalTask``: one output shard scored beside its input shard (``eval-<hash8>/``), or a k-same
  group's shard beside its members' pixels in the ``EmbeddingTask`` cache;
* ``InversionTask``: the interpolation's stage 1, one input shard's images DDIM-inverted into
  ``inversions/cache/<shard>/<hash of key>.safetensors``;
* ``PairTask``: the interpolation's stage 2, one group of pairs decoded into one output shard;
* ``EmbeddingTask``: ``--identity k-same``'s stage 1, one input shard's images embedded and cached
  under ``k-same/``;
* ``GroupTask``: its stage 2, one group's surrogate and every member's output, into one shard
  (with --region faces: the members' surrogate face crops, cached);
* ``CompositeTask``: with --region faces, its stage 3: one input shard with every face replaced
  by its group's surrogate crop.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import ClassVar

from pipeline.engine.completion import SCORING_COUNTS, SHARD_COUNTS
from pipeline.io.limits import DEFAULT_MAX_MEMBER_BYTES
from pipeline.io.pairs import ImageRef, Pair
from pipeline.io.sample_keys import key_file_name, printable_key
from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA, GROUP_MANIFEST_SCHEMA, MANIFEST_SCHEMA, PAIR_MANIFEST_SCHEMA
from pipeline.io.shards import SHARD_SUFFIXES, shard_name

# Each task type says what it reads (``source``), what it writes (``files``), and its manifest
# (schema, count columns, the columns every row of it starts with). The sources and sinks are
# imported where they are made: planning a run needs none of them (nor torch).


def shard_stem(url: str) -> str:
    """``.../celeba-000003.tar.gz`` -> ``celeba-000003``."""
    name = shard_name(url)
    return next((name[: -len(sfx)] for sfx in SHARD_SUFFIXES if name.endswith(sfx)), name)


@dataclass(frozen=True)
class ShardTask:
    """One input shard to one output shard, its rows, its face rows (face regions), its manifest row."""
    input_url: str
    output_url: str
    rows_url: str
    manifest_url: str
    input_bytes: int | None = None
    input_version: str | None = None       # io.listing.content_version of the input when planned
    manifest_schema: ClassVar = MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

    @classmethod
    def for_shard(cls, run_dir: str, input_url: str, input_bytes: int | None = None,
                  input_version: str | None = None) -> "ShardTask":
        stem = shard_stem(input_url)
        # Outputs are plain tars whatever the input's compression.
        return cls(input_url, posixpath.join(run_dir, "shards", f"{stem}.tar"), posixpath.join(run_dir, "rows", f"{stem}.parquet"),
                   posixpath.join(run_dir, "manifest", f"{stem}.parquet"), input_bytes, input_version)

    @property
    def faces_url(self) -> str:
        """Per-face rows (--region faces), beside the rows: ``<run_dir>/faces/<stem>.parquet``."""
        run_dir, name = posixpath.split(posixpath.dirname(self.rows_url))[0], posixpath.basename(self.rows_url)
        return posixpath.join(run_dir, "faces", name)

    def source(self, transform, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, **_):
        from pipeline.engine.sources import ShardSource

        return ShardSource(self.input_url, max_member_bytes, transform)

    def files(self, transform, key_ordered: bool = False):
        from pipeline.engine.loop import TarSink, TaskFiles

        side = {"faces": self.faces_url} if "faces" in transform.side_schemas else {}
        return TaskFiles(self.rows_url, side, sinks={"shards": TarSink(self.output_url, key_ordered)})

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url, "input_bytes": self.input_bytes,
                "input_version": self.input_version, **context}

    def row_base(self) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url}


@dataclass(frozen=True)
class EvalTask:
    """One output shard to score, its input shard, the job's rows of it (which output came
    from which source), and the three files it produces. ``cached_sources`` (a k-same group,
    whose ``input_url`` is the group's name): each output's source is its member's pixels as
    the model saw them, from stage 1's cache, found by the row's ``input_shard`` and
    ``source_key``; ``input_version`` is then the group's ``members_hash``."""
    input_url: str
    output_url: str
    rows_url: str
    features_url: str
    manifest_url: str
    job_rows_url: str = ""
    input_version: str | None = None     # the job's manifest row's: which content its outputs were made from
    cached_sources: bool = False
    manifest_schema: ClassVar = EVAL_MANIFEST_SCHEMA
    counts: ClassVar = SCORING_COUNTS

    @classmethod
    def for_shard(cls, eval_dir: str, input_url: str, output_url: str, input_version: str | None = None,
                  cached_sources: bool = False) -> "EvalTask":
        stem = shard_name(output_url).removesuffix(".tar")
        run_dir = posixpath.dirname(eval_dir.rstrip("/"))
        return cls(input_url, output_url, posixpath.join(eval_dir, "rows", f"{stem}.parquet"),
                   posixpath.join(eval_dir, "features", f"{stem}.npz"),
                   posixpath.join(eval_dir, "manifest", f"{stem}.parquet"),
                   posixpath.join(run_dir, "rows", f"{stem}.parquet"), input_version, cached_sources)

    def source_cache_url(self, input_shard: str, key: str) -> str:
        """Where stage 1 cached a k-same member's pixels (``EmbeddingTask.cache_url``)."""
        run_dir = posixpath.dirname(posixpath.dirname(self.job_rows_url))
        return EmbeddingTask.for_shard(run_dir, input_shard).cache_url(key)

    def source(self, transform, image_field: str | None = None, **_):
        from pipeline.engine.sources import ScoringSource

        return ScoringSource(self, image_field, transform.chunk_size)

    def files(self, transform, **_):
        from pipeline.engine.loop import TaskFiles

        return TaskFiles(self.rows_url, files={"features": self.features_url})

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url, "input_version": self.input_version,
                **context}

    def row_base(self) -> dict:
        return {}


class _KeyCacheStage:
    """What a stage that reads one input shard and caches a file per key shares (inversions,
    k-same embeddings): the cache's file names, the source, the manifest and row bases."""

    def cache_url(self, key: str) -> str:
        """Named by a hash of the key: a key is data from the shard, never a path."""
        return posixpath.join(self.cache_dir, key_file_name(key, ".safetensors"))

    def source(self, transform, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, **_):
        from pipeline.engine.sources import ShardSource

        return ShardSource(self.input_url, max_member_bytes, transform)

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.cache_dir, "input_bytes": self.input_bytes,
                "input_version": self.input_version, **context}

    def row_base(self) -> dict:
        return {"input_shard": self.input_url}


@dataclass(frozen=True)
class InversionTask(_KeyCacheStage):
    input_url: str
    cache_dir: str
    rows_url: str
    features_url: str
    manifest_url: str
    input_bytes: int | None = None
    wanted: frozenset[str] | None = None     # keys some pair uses (None: every image)
    input_version: str | None = None         # io.listing.content_version of the input when planned
    manifest_schema: ClassVar = MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

    @classmethod
    def for_shard(cls, run_dir: str, input_url: str, input_bytes: int | None = None,
                  wanted: frozenset[str] | None = None, input_version: str | None = None) -> "InversionTask":
        stem, inv = shard_stem(input_url), posixpath.join(run_dir, "inversions")
        return cls(input_url, posixpath.join(inv, "cache", stem), posixpath.join(inv, "rows", f"{stem}.parquet"),
                   posixpath.join(inv, "features", f"{stem}.npz"), posixpath.join(inv, "manifest", f"{stem}.parquet"),
                   input_bytes, wanted, input_version)

    def files(self, transform, **_):
        from pipeline.engine.loop import KeyFiles, TaskFiles

        return TaskFiles(self.rows_url, files={"features": self.features_url}, sinks={"cache": KeyFiles(self.cache_url)})


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
    manifest_schema: ClassVar = PAIR_MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

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

    def source(self, transform, **_):
        from pipeline.engine.sources import PairGroupSource

        return PairGroupSource(self)

    def files(self, transform, **_):
        from pipeline.engine.loop import TarSink, TaskFiles

        return TaskFiles(self.rows_url, files={"features": self.features_url}, sinks={"shards": TarSink(self.output_url)})

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.name, "output_shard": self.output_url, "pairs_hash": self.pairs_hash, **context}

    def row_base(self) -> dict:
        return {}


@dataclass(frozen=True)
class FileGroupTask:
    """A group of image files of one input folder (``pipeline.io.image_files``: content-defined,
    so it stays the same when other files come or go) to its outputs: one WebDataset shard
    (``shards/<name>.tar``), or one file per output under ``files/`` with the list of the files
    it may write (``file-lists/<name>.json``), written before any of them, so a withdrawal or a
    redo finds every file even of a run killed mid-task. Rows, face rows and the manifest row as
    a ``ShardTask``'s; rows also say each output's source path and output file."""
    input_url: str                            # <root>#<gid>: how manifests name the group
    name: str                                 # <root label>-<gid>: its files' names
    entries: tuple                            # io.image_files.FileEntry, sorted by relative path
    run_dir: str
    output_format: str = "webdataset"         # or "files"
    input_bytes: int | None = None
    input_version: str | None = None          # io.image_files.FileGroup.version when planned
    manifest_schema: ClassVar = MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

    @classmethod
    def for_group(cls, run_dir: str, root: str, group, output_format: str = "webdataset") -> "FileGroupTask":
        from pipeline.io.image_files import group_url, root_label

        return cls(group_url(root, group.gid), f"{root_label(root)}-{group.gid}", tuple(group.entries), run_dir,
                   output_format, group.size, group.version)

    @classmethod
    def named(cls, run_dir: str, input_url: str, output_format: str = "webdataset") -> "FileGroupTask":
        """The task of a group known only by its manifest name (one that is gone): its files' URLs."""
        from pipeline.io.image_files import root_label, split_group_url

        root, gid = split_group_url(input_url)
        return cls(input_url, f"{root_label(root)}-{gid}", (), run_dir, output_format)

    def _path(self, folder: str, suffix: str) -> str:
        return posixpath.join(self.run_dir, folder, f"{self.name}{suffix}")

    @property
    def output_url(self) -> str:
        """The published shard, or (files) the list of the files the task writes."""
        return self._path("shards", ".tar") if self.output_format == "webdataset" else self.file_list_url

    @property
    def file_list_url(self) -> str:
        return self._path("file-lists", ".json")

    @property
    def files_dir(self) -> str:
        return posixpath.join(self.run_dir, "files")

    @property
    def rows_url(self) -> str:
        return self._path("rows", ".parquet")

    @property
    def faces_url(self) -> str:
        return self._path("faces", ".parquet")

    @property
    def manifest_url(self) -> str:
        return self._path("manifest", ".parquet")

    def source(self, transform, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, **_):
        from pipeline.engine.sources import FileGroupSource

        return FileGroupSource(self.entries, max_member_bytes, transform)

    def output_names(self, transform) -> dict[str, str]:
        """Output key -> the file it gets under ``files/`` (anonymize: one output per input,
        named by the transform's publisher: a pseudonym, or with ``--keys keep`` the input's
        relative path)."""
        from pipeline.io.image_files import output_file_name

        publisher = transform.publisher
        keep = not publisher.job.pseudonymized
        names = {}
        for e in self.entries:
            if e.error_kind is None:
                key = publisher.key(e.key, None, 0)
                names[key] = output_file_name(e.rel, key, keep)
        return names

    def files(self, transform, key_ordered: bool = False):
        from pipeline.engine.loop import FileSink, TarSink, TaskFiles

        side = {"faces": self.faces_url} if "faces" in transform.side_schemas else {}
        if self.output_format == "webdataset":
            return TaskFiles(self.rows_url, side, sinks={"shards": TarSink(self.output_url, key_ordered)},
                             annotate=self._annotator({}))
        names = self.output_names(transform)
        return TaskFiles(self.rows_url, side, sinks={"shards": FileSink(self.files_dir, self.file_list_url, names)},
                         annotate=self._annotator(names))

    def _annotator(self, names: dict[str, str]):
        """The private columns of a row from a file: its source path and (files) its output file."""
        by_key = {e.key: e for e in self.entries}

        def annotate(row: dict) -> dict:
            entry = by_key.get(row.get("source_key"))
            if entry is None:
                return row
            out = {**row, "source_path": printable_key(entry.rel)}
            if row.get("status") == "ok" and row.get("key") in names:
                out["output_file"] = names[row["key"]]
            return out
        return annotate

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url, "input_bytes": self.input_bytes,
                "input_version": self.input_version, **context}

    def row_base(self) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url}


@dataclass(frozen=True)
class EmbeddingTask(_KeyCacheStage):
    """k-same stage 1: one input shard's images, each with its person and appearance embedding
    (rows) and its pixels at the model's resolution (``k-same/cache/<shard>/<hash of key>``)."""
    input_url: str
    cache_dir: str
    rows_url: str
    manifest_url: str
    input_bytes: int | None = None
    input_version: str | None = None
    manifest_schema: ClassVar = MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

    @classmethod
    def for_shard(cls, run_dir: str, input_url: str, input_bytes: int | None = None,
                  input_version: str | None = None) -> "EmbeddingTask":
        stem, base = shard_stem(input_url), posixpath.join(run_dir, "k-same")
        return cls(input_url, posixpath.join(base, "cache", stem), posixpath.join(base, "rows", f"{stem}.parquet"),
                   posixpath.join(base, "manifest", f"{stem}.parquet"), input_bytes, input_version)

    def files(self, transform, **_):
        from pipeline.engine.loop import KeyFiles, TaskFiles

        return TaskFiles(self.rows_url, sinks={"cache": KeyFiles(self.cache_url)})


@dataclass(frozen=True)
class GroupMember:
    key: str
    person: str
    shard: str
    cache_url: str


@dataclass(frozen=True)
class GroupTask:
    """k-same stage 2: one group (``group-<id>``): its surrogate and every member's output,
    published as ``shards/group-<id>.tar``; ``members_hash`` names the members and the content
    versions they were cached from (a change redoes the group). With ``faces`` (--region faces)
    the members are face crops and their outputs are not published: they are cached, one file
    per member key, under ``k-same/surrogates/group-<id>/`` for the composite stage."""
    group: int
    members: tuple[GroupMember, ...]
    members_hash: str
    output_url: str
    rows_url: str
    manifest_url: str
    faces: bool = False
    manifest_schema: ClassVar = GROUP_MANIFEST_SCHEMA
    counts: ClassVar = SHARD_COUNTS

    @staticmethod
    def name_of(group: int) -> str:
        return f"group-{group:06d}"

    @staticmethod
    def manifest_dir(run_dir: str, faces: bool = False) -> str:
        return posixpath.join(run_dir, "k-same" if faces else "", "surrogates-manifest" if faces else "manifest")

    @classmethod
    def for_group(cls, run_dir: str, group: int, members=(), members_hash: str = "",
                  faces: bool = False) -> "GroupTask":
        name = cls.name_of(group)
        manifest = posixpath.join(cls.manifest_dir(run_dir, faces), f"{name}.parquet")
        if faces:
            base = posixpath.join(run_dir, "k-same")
            return cls(group, tuple(members), members_hash, posixpath.join(base, "surrogates", name),
                       posixpath.join(base, "surrogates-rows", f"{name}.parquet"), manifest, True)
        return cls(group, tuple(members), members_hash, posixpath.join(run_dir, "shards", f"{name}.tar"),
                   posixpath.join(run_dir, "rows", f"{name}.parquet"), manifest)

    @property
    def published(self) -> str:
        """What to remove to withdraw its outputs (with ``faces``: its cache directory)."""
        return self.output_url.rstrip("/") + "/" if self.faces else self.output_url

    def cache_url(self, key: str) -> str:
        """With ``faces``: a member's surrogate crop, named by a hash of its key."""
        return posixpath.join(self.output_url, key_file_name(key, ".safetensors"))

    @property
    def input_url(self) -> str:       # what progress, failures and the manifest call the task
        return self.name_of(self.group)

    def source(self, transform, **_):
        from pipeline.engine.sources import GroupSource

        return GroupSource(self)

    def files(self, transform, key_ordered: bool = False):
        from pipeline.engine.loop import KeyFiles, TarSink, TaskFiles

        if self.faces:
            return TaskFiles(self.rows_url, sinks={"cache": KeyFiles(self.cache_url)})
        return TaskFiles(self.rows_url, sinks={"shards": TarSink(self.output_url, key_ordered)})

    def manifest_base(self, **context) -> dict:
        return {"input_shard": self.input_url, "output_shard": self.output_url, "members_hash": self.members_hash,
                **context}

    def row_base(self) -> dict:
        return {"output_shard": self.output_url}


@dataclass(frozen=True)
class CompositeImage:
    """k-same with --region faces, stage 3: what stage 1 recorded of one image: its faces'
    clipped boxes in detection order (``pipeline.regions.boxes.FaceBox``; the crops and masks
    are planned from them again), or why it cannot be used."""
    key: str
    boxes: tuple = ()
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CompositeFace:
    """A regenerated face (its member key): its group and surrogate crop, or why it has none
    (``group_waiting``, or the reason it is no group member)."""
    key: str
    group: int | None = None
    surrogate_url: str | None = None
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CompositeTask(ShardTask):
    """k-same with --region faces, stage 3: one input shard read again, every face replaced by
    its group's surrogate crop, published like a region-mode anonymize shard (``shards/``,
    ``rows/``, ``faces/``, ``manifest/``). ``composite_hash`` names the input's content and each
    face's group and the group's members (a change redoes the shard)."""
    images: tuple[CompositeImage, ...] = ()
    faces: tuple[CompositeFace, ...] = ()
    composite_hash: str = ""
    manifest_schema: ClassVar = GROUP_MANIFEST_SCHEMA

    @classmethod
    def for_inputs(cls, run_dir: str, input_url: str, input_version: str | None, images=(), faces=(),
                   composite_hash: str = "") -> "CompositeTask":
        base = ShardTask.for_shard(run_dir, input_url, None, input_version)
        return cls(base.input_url, base.output_url, base.rows_url, base.manifest_url, None, input_version,
                   tuple(images), tuple(faces), composite_hash)

    def manifest_base(self, **context) -> dict:
        return {**super().manifest_base(**context), "members_hash": self.composite_hash}
