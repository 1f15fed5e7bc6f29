"""Where a task's items come from, in chunks, on the engine's reader thread. No Ray.

* ``ShardSource``: an input shard, streamed sample by sample (``pipeline.io.shards``), each
  chunk's images decoded by the transform's ``DecodeSpec``; samples that cannot be used (an
  unsafe or duplicate key, a truncated sample, a bad image) become error rows here, once, for
  every job kind.
* ``ScoringSource``: an output shard beside its input shard (scoring a finished run): each
  output's source found through the job's rows, the input's images parked on local disk first
  (a k-same group's sources: its members' cached pixels).
* ``PairGroupSource``: a group of pairs with their cached inversions (the interpolation's
  second stage), as one chunk.
* ``GroupSource``: a k-same group's members with their cached pixels, as one chunk.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from pipeline.errors import DUPLICATE_KEY, MISSING_INPUT, TRUNCATED, UNSAFE_KEY, SampleError
from pipeline.io.pixel_cache import read_cached_pixels
from pipeline.io.images import BadImage, find_image_field, prepare_image
from pipeline.io.sample_keys import printable_key, unsafe_key_reason
from pipeline.io.shards import RawSample, ReadLimits, ShardReader
from pipeline.transforms.base import DecodeSpec, Decoded


@dataclass
class Chunk:
    """``items`` for the transform, ``rows`` of inputs that give no item (bad samples, unused
    ones), and how many input samples (or pairs) the chunk covers."""
    items: list
    rows: list[dict] = field(default_factory=list)
    inputs: int = 0


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sample_error(sample: RawSample, seen: set[str]) -> SampleError | None:
    """Why a sample cannot be used whatever its image (``seen``: keys met so far in the shard)."""
    if sample.error_kind is not None:
        return SampleError(sample.error_kind, sample.error)
    if sample.truncated:
        return SampleError(TRUNCATED, "shard ends inside this sample (truncated tar)")
    reason = unsafe_key_reason(sample.key)
    if reason is not None:
        return SampleError(UNSAFE_KEY, f"unsafe key: {reason}")
    if sample.key in seen:
        return SampleError(DUPLICATE_KEY, "duplicate key in shard (members of one sample not adjacent, or a repeated key)")
    seen.add(sample.key)
    return None


def error_row(sample: RawSample, error: SampleError) -> dict:
    """The row of a sample that made no output; an unsafe key is stored escaped."""
    key = printable_key(sample.key)
    return {"key": key, "source_key": key, "status": "error", "error": str(error), "error_kind": error.kind}


def decode_samples(chunk: list[RawSample], seen: set[str], spec: DecodeSpec
                   ) -> tuple[list[Decoded], list[tuple[RawSample, SampleError]]]:
    """Decode a chunk's images: the good ones and (sample, error) for the rest, in input order."""
    decoded, errors = [], []
    for sample in chunk:
        error = sample_error(sample, seen)
        if error is None:
            try:
                name = find_image_field(sample.fields, spec.image_field)
                decoded.append(Decoded(sample, name, prepare_image(sample.fields[name], spec.resolution, spec.min_side,
                                                                   spec.max_pixels, spec.keep_size)))
                continue
            except BadImage as exc:
                error = exc
        errors.append((sample, error))
    return decoded, errors


class ShardSource:
    """An input shard in chunks of ``chunk_size`` samples; ``error`` holds why the tar ended early."""

    def __init__(self, url: str, max_member_bytes: int, transform):
        self.reader = ShardReader(url, ReadLimits(max_member_bytes))
        self.transform = transform

    @property
    def error(self) -> str | None:
        return self.reader.error

    def chunks(self) -> Iterator[Chunk]:
        seen: set[str] = set()
        select, spec = self.transform.select, self.transform.decode
        for raw in chunked(self.reader, self.transform.chunk_size):
            rows, wanted = [], []
            for sample in raw:
                skipped = select(sample)
                if skipped is None:
                    wanted.append(sample)
                else:
                    rows.append(skipped)
            decoded, errors = decode_samples(wanted, seen, spec)
            yield Chunk(decoded, rows + [error_row(s, e) for s, e in errors], len(raw))


@dataclass
class ScoringItem:
    """One output beside its source, both decoded (the source at the output's size)."""
    key: str
    source_key: str
    t: float
    variant: int
    source: object
    output: object


class ScoringSource:
    """The outputs of a finished run's shard, each beside its source (``pipeline.transforms.scoring``).

    The sources are an input shard's images, parked on local disk first (one pass over the
    input shard), or for a k-same group each member's pixels from stage 1's cache (read one
    file per output: the members come from many input shards). Then the outputs stream in
    whatever order they were published: memory holds one chunk and the index, whatever the
    shard size. Each source is prepared at its output's size by the job's own rule."""
    error = None

    def __init__(self, task, image_field: str | None, chunk_size: int):
        self.task, self.image_field, self.chunk_size = task, image_field, chunk_size

    def chunks(self) -> Iterator[Chunk]:
        made_from = output_sources(self.task.job_rows_url)
        if self.task.cached_sources:
            sources = cached_sources(self.task)
        else:
            sources = shard_sources(self.task.input_url, self.image_field, {s for s, _, _, _ in made_from.values()})
        with sources as source_of:
            for outputs in chunked(ShardReader(self.task.output_url), self.chunk_size):
                chunk = Chunk([], inputs=len(outputs))
                for sample in outputs:
                    src_key, t, variant, input_shard = made_from.get(sample.key, (None, None, 0, None))
                    try:
                        if src_key is None:
                            raise BadImage(MISSING_INPUT, "no ok row of the job names this output (rows and shard disagree)")
                        output = prepare_image(sample.fields[find_image_field(sample.fields)], None, 1,
                                               keep_size=True).pixels
                        source = source_of(src_key, input_shard, output)
                    except BadImage as exc:
                        chunk.rows.append({"key": sample.key, "source_key": src_key, "t": t, "variant": variant,
                                           "status": "error", "error": str(exc), "error_kind": exc.kind})
                        continue
                    chunk.items.append(ScoringItem(sample.key, src_key, t, variant, source, output))
                yield chunk


@contextmanager
def shard_sources(input_url: str, image_field: str | None, wanted: set[str]):
    """``source_of(key, input_shard, output)`` over one input shard's images, parked on local disk."""
    from pipeline.io.spool import FieldSpool

    with FieldSpool() as sources:
        for sample in ShardReader(input_url):
            if sample.key in wanted and sample.key not in sources and sample.fields:
                try:
                    name = find_image_field(sample.fields, image_field)
                except BadImage:
                    continue
                sources.put(sample.key, {"image": sample.fields[name]})

        def source_of(key: str, _input_shard, output):
            if key not in sources:
                raise BadImage(MISSING_INPUT, f"source {key!r} not found in {input_url}")
            return source_like(sources.get(key)["image"], output)
        yield source_of


@contextmanager
def cached_sources(task):
    """``source_of(key, input_shard, output)`` for a k-same group: the member's pixels as the
    model saw them (what its output was made from), from stage 1's cache."""
    def source_of(key: str, input_shard: str, output):
        try:
            pixels = read_cached_pixels(task.source_cache_url(input_shard, key))
        except Exception as exc:      # deleted or damaged since the group was made: this output only
            raise BadImage(MISSING_INPUT, f"the cached source of {printable_key(key)!r} cannot be read "
                                          f"({type(exc).__name__}: {exc}); rerun the job to redo its group") from None
        if pixels.shape != output.shape:
            raise BadImage(MISSING_INPUT, f"cached source is {pixels.shape[1]}x{pixels.shape[0]}, its output "
                                          f"{output.shape[1]}x{output.shape[0]}: not the image it was made from")
        return pixels
    yield source_of


def output_sources(job_rows_url: str) -> dict[str, tuple[str, float, int, str | None]]:
    """Each written output's (source key, t, variant, input shard), from the job's rows of its shard."""
    import fsspec
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(job_rows_url)
    with fs.open(path, "rb") as f:
        rows_file = pq.ParquetFile(f)
        names = rows_file.schema_arrow.names
        rows = rows_file.read(columns=[c for c in ("key", "source_key", "t", "variant", "status", "input_shard")
                                       if c in names]).to_pylist()
    return {r["key"]: (r["source_key"], r["t"], r["variant"] or 0, r.get("input_shard"))
            for r in rows if r["status"] == "ok"}


def source_like(data: bytes, output):
    """The source as the job saw it beside ``output``: resized by the job's rule to a square
    output's size, or as it is for an output that kept its size (``--region faces``)."""
    if output.shape[0] == output.shape[1]:
        return prepare_image(data, output.shape[0], 1).pixels
    source = prepare_image(data, None, 1, keep_size=True).pixels
    if source.shape != output.shape:
        raise BadImage(MISSING_INPUT, f"source is {source.shape[1]}x{source.shape[0]}, its output "
                                      f"{output.shape[1]}x{output.shape[0]}: not the image it was made from")
    return source


@dataclass
class PairItem:
    """One pair of a group with its two cached inversions (or why one is missing)."""
    pair: object
    images: dict = field(default_factory=dict)     # key -> inversion tensors
    reason: str | None = None


class PairGroupSource:
    """A group's pairs with their endpoints' cached inversions, read once per key."""
    error = None

    def __init__(self, task):
        self.task = task

    def chunks(self) -> Iterator[Chunk]:
        from pipeline.transforms.frames import read_inversion

        images, reasons = {}, {}
        for ref in self.task.refs:
            if ref.error is not None:
                reasons[ref.key] = ref.error
                continue
            try:
                images[ref.key] = read_inversion(ref.cache_url)
            except Exception as exc:   # deleted or damaged cache file: this key's pairs only
                reasons[ref.key] = f"its cached inversion cannot be read ({type(exc).__name__}: {exc}); rerun to redo it"
        items = []
        for pair in self.task.pairs:         # one chunk: a group's frames batch across its pairs
            reason = next((f"image {side} ({key!r}): {reasons[key]}"
                           for side, key in (("A", pair.key_a), ("B", pair.key_b)) if key in reasons), None)
            items.append(PairItem(pair, {} if reason else {k: images[k] for k in (pair.key_a, pair.key_b)}, reason))
        yield Chunk(items, inputs=len(items))


class FileGroupSource:
    """A group of image files (``pipeline.io.image_files``) in chunks: each file one sample keyed
    by its path's hash, with its bytes under its suffix's field. A file refused when listed (an
    unsafe name, a symlink out of the folder, a FIFO), one over ``--max-member-bytes``, one
    gone or unreadable since, and an image that cannot be used are error rows here, once."""
    error = None

    def __init__(self, entries, max_member_bytes: int, transform):
        self.entries, self.max_bytes, self.transform = entries, max_member_bytes, transform

    def chunks(self) -> Iterator[Chunk]:
        from pipeline.io.image_files import image_field_of, register_optional_openers

        register_optional_openers()
        spec, select = self.transform.decode, self.transform.select
        for batch in chunked(self.entries, self.transform.chunk_size):
            items, rows = [], []
            for entry in batch:
                sample = RawSample(entry.key)
                try:
                    if entry.error_kind is not None:
                        raise SampleError(entry.error_kind, entry.error)
                    field_name = image_field_of(entry.rel)
                    sample.fields[field_name] = read_file(entry, self.max_bytes)
                    skipped = select(sample)
                    if skipped is not None:
                        rows.append(skipped)
                        continue
                    items.append(Decoded(sample, field_name, prepare_image(
                        sample.fields[field_name], spec.resolution, spec.min_side, spec.max_pixels, spec.keep_size)))
                except SampleError as exc:
                    rows.append(error_row(sample, exc))
            yield Chunk(items, rows, len(batch))


def read_file(entry, max_bytes: int) -> bytes:
    """A listed file's bytes, at most ``max_bytes`` (larger: an error row, the rest never read).
    Local files are opened without following a symlink in the last component (one swapped in
    since the listing is refused; a symlink accepted when listed is read through its target)."""
    import os

    from pipeline.errors import TOO_LARGE, UNREADABLE_FILE, UNSAFE_MEMBER
    from pipeline.io.image_files import is_local, local_path

    if entry.size is not None and entry.size > max_bytes:
        raise SampleError(TOO_LARGE, f"file is {entry.size} bytes; at most {max_bytes} (--max-member-bytes)")
    try:
        if is_local(entry.url):
            fd = os.open(local_path(entry.url), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                import stat

                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise SampleError(UNSAFE_MEMBER, "not a regular file: not read")
                data = f.read(max_bytes + 1)
        else:
            import fsspec

            with fsspec.open(entry.url, "rb") as f:
                data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise SampleError(UNREADABLE_FILE, "file gone since it was listed (the next run sees the change)") from None
    except PermissionError as exc:
        raise SampleError(UNREADABLE_FILE, f"file cannot be read: {exc.strerror or exc}") from None
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP:                # a symlink: a symlink swapped in since the listing
            raise SampleError(UNSAFE_MEMBER, "a symlink (not there when listed): not read") from None
        raise                                       # storage failing: the task fails and is redone
    if len(data) > max_bytes:
        raise SampleError(TOO_LARGE, f"file is over {max_bytes} bytes (--max-member-bytes)")
    return data


class GroupSource:
    """A k-same group's members (stage 2) with their cached pixels, as one chunk of one item per
    member: ``(member, pixels, reason)``. A member whose cache cannot be read gives every member
    its reason: the surrogate needs them all."""
    error = None

    def __init__(self, task):
        self.task = task

    def chunks(self) -> Iterator[Chunk]:
        pixels, reason = {}, None
        for member in self.task.members:
            try:
                pixels[member.key] = read_cached_pixels(member.cache_url)
            except Exception as exc:     # deleted or damaged cache file: the group fails and is redone
                reason = (f"member {printable_key(member.key)!r}: its cached image cannot be read "
                          f"({type(exc).__name__}: {exc}); rerun to redo it")
                break
        members = self.task.members
        yield Chunk([(m, pixels.get(m.key), reason) for m in members], inputs=len(members))
