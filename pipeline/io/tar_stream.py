"""The byte stream under a shard reader: opening it (storage failures become ``SourceError``,
so a reader can tell a broken store from a broken tar), decompressing it here rather than in
tarfile (so every byte passes the reader's budget, compressed or not), and the budget itself."""
from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile

import fsspec

# Header bytes (PAX records, GNU long names) allowed before each member: far more than any
# real name needs, and what keeps a compressed header bomb from being read into memory.
HEADER_BUDGET = 1 << 20


class SourceError(OSError):
    """Reading the shard's bytes from storage failed (as opposed to the bytes being bad)."""


class open_source:
    """The shard's raw bytes; any storage failure surfaces as ``SourceError``."""

    def __init__(self, url: str):
        self.url = url
        self.file = None

    def __enter__(self):
        try:
            fs, path = fsspec.core.url_to_fs(self.url)
            self.file = fs.open(path, "rb")
        except FileNotFoundError:
            raise SourceError("input shard not found") from None
        except PermissionError as exc:
            raise SourceError(f"permission denied ({exc})") from None
        except IsADirectoryError:
            raise SourceError("is a directory, not a shard") from None
        except Exception as exc:
            raise SourceError(f"cannot open ({type(exc).__name__}: {exc})") from None
        return _GuardedSource(self.file)

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()


class _GuardedSource:
    def __init__(self, raw):
        self.raw = raw

    def read(self, size: int = -1) -> bytes:
        try:
            return self.raw.read(size)
        except Exception as exc:
            raise SourceError(f"read failed ({type(exc).__name__}: {exc})") from None


class _Prefixed:
    """A reader that first returns bytes already peeked from ``raw``."""

    def __init__(self, prefix: bytes, raw):
        self.prefix, self.raw = prefix, raw

    def read(self, size: int = -1) -> bytes:
        if self.prefix:
            head = self.prefix if size < 0 else self.prefix[:size]
            self.prefix = self.prefix[len(head):]
            if size < 0:
                return head + self.raw.read()
            return head
        return self.raw.read(size)


def decompressed(raw):
    """The tar stream of ``raw``, decompressed here (gzip, bzip2, xz) so that every byte
    tarfile sees passes through the caller's budget, compressed or not."""
    head = raw.read(6)
    source = _Prefixed(head, raw)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(source, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source, mode="rb")
    return source


class BoundedReader:
    """Counts the tar stream's bytes and refuses to go past ``limit``: a member's data is
    only read after its size was checked, so the limit binds header records (a PAX or
    long-name header claiming gigabytes), which tarfile would otherwise read whole."""

    def __init__(self, raw):
        self.raw, self.count, self.limit = raw, 0, 0

    def allow(self, limit: int) -> None:
        self.limit = max(self.limit, limit + tarfile.RECORDSIZE)

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.count + size > self.limit:
            size = self.limit - self.count
            if size <= 0:
                raise tarfile.ReadError(f"a tar header claims more than {HEADER_BUDGET} bytes")
        data = self.raw.read(size)
        self.count += len(data)
        return data
