"""Reading and writing WebDataset tar shards, local or on any fsspec filesystem.

The reader streams a tar member by member (memory does not grow with shard size), groups
adjacent members into samples the way WebDataset does (key = path up to the first dot of
the base name), and never interprets field bytes: decoding is the caller's business and is
limited to images. A truncated or corrupt tar ends the iteration and is reported through
``ShardReader.error`` rather than raised, so the samples read before it are still processed.

The writer writes under a temporary name and renames only after the tar is closed, so an
interrupted run never leaves a half shard under the final name. Member metadata is fixed
(mtime 0, uid/gid 0, mode 0o644), so equal samples give byte-identical shards.
"""
from __future__ import annotations

import io
import posixpath
import tarfile
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import braceexpand
import fsspec


@dataclass
class RawSample:
    key: str
    fields: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False   # the shard ended inside this sample


def expand_shard_urls(specs: str | list[str]) -> list[str]:
    """Expand brace patterns (``celeba-{000000..000099}.tar``) and comma- or list-separated
    specs into shard URLs, keeping order and dropping repeats. A local directory stands for
    the ``.tar`` (or ``.tar.gz``/``.tgz``) files in it."""
    if isinstance(specs, str):
        specs = [specs]
    urls: list[str] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            for url in braceexpand.braceexpand(part):
                fs, path = fsspec.core.url_to_fs(url)
                if "://" not in url and fs.isdir(path):
                    urls.extend(sorted(f"{path}/{p}" for p in (posixpath.basename(x) for x in fs.ls(path, detail=False)) if p.endswith(SHARD_SUFFIXES)))
                else:
                    urls.append(url)
    seen: set[str] = set()
    return [u for u in urls if not (u in seen or seen.add(u))]


def temporary_path(path: str) -> str:
    """A hidden sibling (``dir/.name.tmp-<uuid>``): dataset readers such as pyarrow skip
    names starting with a dot, so a killed run's partial file never pollutes a table."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")


def temporary_pattern(path: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.tmp-*")


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


class ShardReader:
    """Iterate the samples of one shard; ``error`` holds the reason if the tar ended badly."""

    def __init__(self, url: str):
        self.url = url
        self.error: str | None = None

    def __iter__(self) -> Iterator[RawSample]:
        current: RawSample | None = None
        try:
            with fsspec.open(self.url, "rb") as raw:
                stream = _CountingReader(raw)
                with tarfile.open(fileobj=stream, mode="r|*") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        key, ext = split_member_name(member.name)
                        if current is not None and key != current.key:
                            yield current
                            current = None
                        if current is None:
                            current = RawSample(key)
                        data = tar.extractfile(member).read()
                        if len(data) != member.size:
                            raise tarfile.ReadError(f"member {member.name} truncated")
                        # A repeated field within one sample keeps the first copy; the repeat is
                        # recorded in the field name so nothing disappears unnoticed.
                        current.fields[ext if ext not in current.fields else f"{ext}.dup"] = data
                    end_of_members = tar.offset
                    compressed = getattr(tar.fileobj, "comptype", "tar") != "tar"
                # Python's stream reader takes a cut at a member boundary for a normal end;
                # a complete tar has its end-of-archive block after the last member.
                while stream.read(1 << 20):
                    pass
                if not compressed and stream.count < end_of_members + tarfile.BLOCKSIZE:
                    raise tarfile.ReadError("archive ends without its end-of-archive block (cut at a member boundary)")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            if current is not None:
                current.truncated = True
        if current is not None:
            yield current


class _CountingReader:
    """A read-only file wrapper that counts the bytes read through it."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


class AtomicShardWriter:
    """Write samples to ``url`` through a temporary file renamed on ``close``."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.tmp_path = temporary_path(self.path)
        self._file = self.fs.open(self.tmp_path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        if "." in posixpath.basename(key):
            raise ValueError(f"sample key {key!r} contains a dot, which WebDataset readers split on")
        for ext in sorted(fields):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(fields[ext]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(fields[ext]))
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self._file.close()
        self.fs.mv(self.tmp_path, self.path)

    def abort(self) -> None:
        try:
            self._tar.close()
            self._file.close()
        finally:
            if self.fs.exists(self.tmp_path):
                self.fs.rm(self.tmp_path)

    def __enter__(self) -> "AtomicShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
