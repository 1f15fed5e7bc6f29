"""Reading and writing WebDataset tar shards, local or on any fsspec filesystem.

The reader streams a tar member by member (memory does not grow with shard size), groups
adjacent members into samples the way WebDataset does (key = path up to the first dot of
the base name), and never interprets field bytes: decoding is the caller's business and is
limited to images. A truncated or corrupt tar ends the iteration and is reported through
``ShardReader.error`` rather than raised, so the samples read before it are still processed.

The writer publishes a shard only when it is complete (``pipeline.io.storage``: one upload
on object stores, a temporary renamed elsewhere), so an interrupted run never leaves a half
shard under the final name. Member metadata is fixed
(mtime 0, uid/gid 0, mode 0o644), so equal samples give byte-identical shards.
"""
from __future__ import annotations

import io
import lzma
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import braceexpand
import fsspec

from pipeline.errors import TOO_LARGE, UNSAFE_KEY, UNSAFE_MEMBER, UnreadableShard  # noqa: F401 (re-exported)
from pipeline.io.listing import object_entries
from pipeline.io.sample_keys import printable_key, unsafe_name_reason
from pipeline.io.storage import AtomicFile, temporary_path, temporary_prefix  # noqa: F401 (re-exported)
from pipeline.io.tar_stream import HEADER_BUDGET, BoundedReader, SourceError, decompressed, open_source


@dataclass
class RawSample:
    key: str
    fields: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False   # the shard ended inside this sample
    error_kind: str | None = None   # why the sample cannot be used whatever its bytes (its members were not kept)
    error: str | None = None
    size: int = 0             # bytes of the fields kept

    def reject(self, kind: str, error: str) -> None:
        self.error_kind, self.error = kind, error
        self.fields.clear()
        self.size = 0


def expand_shard_urls(specs: str | list[str]) -> list[str]:
    """Expand brace patterns (``celeba-{000000..000099}.tar``) and comma- or list-separated
    specs into shard URLs, keeping order and dropping repeats. A local directory stands for
    the ``.tar`` (or ``.tar.gz``/``.tgz``) files in it. Names are not checked for existence
    here (the planner does, from listings); telling local directories apart costs one listing
    per parent directory, not a call per name."""
    if isinstance(specs, str):
        specs = [specs]
    urls: list[str] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if part:
                urls.extend(_with_directories_expanded(list(braceexpand.braceexpand(part))))
    seen: set[str] = set()
    return [u for u in urls if not (u in seen or seen.add(u))]


def _with_directories_expanded(urls: list[str]) -> list[str]:
    local = [u for u in urls if "://" not in u]
    entries = object_entries(local) if local else {}
    out: list[str] = []
    for url in urls:
        entry = entries.get(url)
        if entry is not None and entry.get("type") == "directory":
            fs, path = fsspec.core.url_to_fs(url)
            out.extend(sorted(f"{path}/{p}" for p in (posixpath.basename(x) for x in fs.ls(path, detail=False))
                              if p.endswith(SHARD_SUFFIXES)))
        else:
            out.append(url)
    return out


SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def shard_name(url: str) -> str:
    """Base name of a shard URL (``.../celeba-000003.tar`` -> ``celeba-000003.tar``)."""
    return posixpath.basename(url.rstrip("/"))


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: key is everything before the first dot of the base name."""
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    key = posixpath.join(directory, stem) if directory else stem
    return key, ext.lower() if dot else ""


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one sample may cost, whatever the shard claims."""
    max_member_bytes: int = 64 << 20        # each member, and a sample's members together
    max_sample_members: int = 256


_UNSAFE_TYPES = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
                 tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}


class ShardReader:
    """Iterate the samples of one shard; ``error`` holds the reason if the tar ended badly.

    Raises ``UnreadableShard`` when the shard cannot be read at all or its storage fails;
    a tar that ends early (or is corrupt) after valid members ends the iteration with
    ``error`` set and the last sample marked ``truncated``."""

    def __init__(self, url: str, limits: ReadLimits = ReadLimits()):
        self.url = url
        self.limits = limits
        self.error: str | None = None

    def __iter__(self) -> Iterator[RawSample]:
        current: RawSample | None = None
        members = 0
        try:
            with open_source(self.url) as raw:
                stream = BoundedReader(decompressed(raw))
                stream.allow(HEADER_BUDGET)
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    while True:
                        member = tar.next()
                        if member is None:
                            break
                        # This member's data may be skipped (never read into memory unless
                        # it passes the caps); the next header gets the header budget.
                        stream.allow(tar.offset + HEADER_BUDGET)
                        tar.members.clear()      # stream mode would keep every header in memory
                        members += 1
                        if member.isdir():
                            continue
                        key, ext = split_member_name(member.name)
                        if current is not None and key != current.key:
                            yield current
                            current = None
                        if current is None:
                            current = RawSample(key)
                        self._add_member(tar, member, ext, current)
                    end_of_members = tar.offset
                # Python's stream reader takes a cut at a member boundary for a normal end;
                # a complete tar has its end-of-archive block after the last member.
                stream.allow(end_of_members + tarfile.BLOCKSIZE)
                while stream.count < end_of_members + tarfile.BLOCKSIZE and stream.read(tarfile.BLOCKSIZE):
                    pass
                if stream.count < end_of_members + tarfile.BLOCKSIZE:
                    raise tarfile.ReadError("archive ends without its end-of-archive block (cut at a member boundary)")
        except SourceError as exc:      # storage, not data: redo the shard
            raise UnreadableShard(str(exc)) from None
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
            if members == 0:
                raise UnreadableShard(f"not a readable tar ({type(exc).__name__}: {exc})") from None
            self.error = f"{type(exc).__name__}: {exc}"
            if current is not None:
                current.truncated = True
        if current is not None:
            yield current

    def _add_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, sample: RawSample) -> None:
        """Add one member's bytes to ``sample``, or mark the sample unusable (without reading
        the member) when it is a link or device, too big, or one member too many."""
        if sample.error is not None:
            return
        limits = self.limits
        if not member.isfile():
            kind = _UNSAFE_TYPES.get(member.type, f"type {member.type!r}")
            sample.reject(UNSAFE_MEMBER, f"member {printable_key(member.name)!r} is a {kind}, not a file")
            return
        if member.size > limits.max_member_bytes or sample.size + member.size > limits.max_member_bytes:
            sample.reject(TOO_LARGE, f"member {printable_key(member.name)!r} is {member.size} bytes; a sample's "
                                     f"members may hold at most {limits.max_member_bytes} bytes (--max-member-bytes)")
            return
        if ext and unsafe_name_reason(ext) is not None:    # field names become output member names too
            sample.reject(UNSAFE_KEY, f"unsafe field name {printable_key(ext)!r}: {unsafe_name_reason(ext)}")
            return
        if len(sample.fields) >= limits.max_sample_members:
            sample.reject(TOO_LARGE, f"more than {limits.max_sample_members} members in one sample")
            return
        data = tar.extractfile(member).read()
        if len(data) != member.size:
            raise tarfile.ReadError(f"member {printable_key(member.name)!r} truncated")
        # A repeated field within one sample keeps the first copy; the repeat is recorded in
        # the field name so nothing disappears unnoticed.
        sample.fields[ext if ext not in sample.fields else f"{ext}.dup"] = data
        sample.size += len(data)


class AtomicShardWriter:
    """Write samples to ``url``, published on ``close`` as a whole (``pipeline.io.storage``:
    straight to the final name where the store's uploads are atomic, else through a temporary
    renamed on close); ``abort`` publishes nothing."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        self._out = AtomicFile(self.fs, self.path)
        # PAX holds names of any length and any UTF-8 (USTAR stops at 100 characters); it adds
        # a header only where a name needs one, so short names give the same bytes as before.
        self._tar = tarfile.open(fileobj=self._out.file, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8")
        self.count = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """Append one sample. Refuses (before writing anything) a key that is not a safe
        member name: callers turn unsafe keys into error rows first, this is the backstop."""
        if "." in posixpath.basename(key):
            raise ValueError(f"sample key {key!r} contains a dot, which WebDataset readers split on")
        infos = []
        for ext in sorted(fields):
            name = f"{key}.{ext}"
            reason = unsafe_name_reason(name)
            if reason is not None:
                raise ValueError(f"member {printable_key(name)!r} is not a safe member name: {reason}")
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(fields[ext]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")    # raises here, before a byte is written
            infos.append(info)
        for info, ext in zip(infos, sorted(fields)):
            self._tar.addfile(info, io.BytesIO(fields[ext]))
        self.count += 1

    def close(self) -> None:
        try:
            self._tar.close()
        except BaseException:
            self._out.abort()
            raise
        self._out.commit()

    def abort(self) -> None:
        try:
            self._tar.close()          # into the discarded file: nothing is published
        except Exception:
            pass
        self._out.abort()

    def __enter__(self) -> "AtomicShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
