"""How an output becomes visible: all at once, never as a partial file. No Ray.

Object stores (S3, GCS, Azure Blob) publish an object when its upload completes: a PUT, or the
completion of a multipart upload (s3fs switches to one above its 5 MiB block size), is atomic,
so a reader sees the old object or the new one, never a part of either. There outputs are
written straight to their final names. Writing to a temporary and renaming would cost more and
buy nothing: S3 has no rename, so fsspec's ``mv`` is a COPY and a DELETE (and s3fs asks the
bucket before creating "directories" that do not exist there).

Everywhere else (local disks, NFS, memory, filesystems this module does not know) a file is
visible while it is being written, so it is written under a hidden temporary name in the same
directory (``.<name>.tmp-<uuid>``, skipped by dataset readers) and renamed when complete. A
temporary whose write fails (a full disk) is removed on the spot; one left by a killed process
is removed by the next run under the run directory's lock (``steps.completion``).

A killed upload to an object store leaves no object, but S3 keeps the parts of an unfinished
multipart upload (billed, invisible) until they are aborted: a bucket lifecycle rule
(AbortIncompleteMultipartUpload) does that.
"""
from __future__ import annotations

import logging
import posixpath
import uuid

log = logging.getLogger(__name__)

# Protocols whose uploads appear at once when complete (s3fs, gcsfs, adlfs's blob API).
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def writes_atomically(fs) -> bool:
    """Whether a file written to ``fs`` becomes visible only when complete. A filesystem class
    may say so itself (``atomic_put = True``, as the tests' simulated object store does)."""
    flag = getattr(fs, "atomic_put", None)
    if flag is not None:
        return bool(flag)
    return bool(ATOMIC_PUT_PROTOCOLS & set(protocols(fs)))


def temporary_path(path: str) -> str:
    """A hidden sibling (``dir/.name.tmp-<uuid>``): dataset readers such as pyarrow skip
    names starting with a dot, so a killed run's partial file never pollutes a table."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f"{temporary_prefix(name)}{uuid.uuid4().hex}")


def temporary_prefix(name: str) -> str:
    """What the temporaries of the file ``name`` start with."""
    return f".{name}.tmp-"


class AtomicFile:
    """A binary file opened for writing that appears under ``path`` only on ``commit``:
    written there directly where the store's uploads are atomic, else under a temporary name
    renamed on commit. ``abort`` (or a failed commit) leaves nothing behind: the upload is
    discarded, the temporary removed."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path
        self.direct = writes_atomically(fs)
        if not self.direct:
            parent = posixpath.dirname(path)
            if parent:
                fs.makedirs(parent, exist_ok=True)
        self.write_path = path if self.direct else temporary_path(path)
        self.file = fs.open(self.write_path, "wb")
        self.done = False

    def commit(self) -> None:
        try:
            self.file.close()                  # object stores: the upload completes here
            if not self.direct:
                self.fs.mv(self.write_path, self.path)
        except BaseException:
            self.abort()
            raise
        self.done = True

    def abort(self) -> None:
        """Throw the write away (best effort: this runs when something already went wrong)."""
        if self.done:
            return
        self.done = True
        if self.direct:
            discard(self.file)
            return
        try:
            self.file.close()
        except Exception:
            pass
        remove_quietly(self.fs, self.write_path)


def discard(file) -> None:
    """End an upload without publishing it: fsspec's buffered files upload on ``close`` (and on
    garbage collection of an open file), so the file is discarded and marked closed instead."""
    try:
        if hasattr(file, "discard"):
            file.discard()                     # s3fs: aborts a multipart upload already begun
    except Exception as exc:
        log.warning("could not discard the upload of %s: %s", getattr(file, "path", file), exc)
    try:
        file.closed = True
    except Exception:
        pass


def remove_quietly(fs, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception as exc:
        log.error("could not remove the partial file %s: %s", path, exc)


def write_bytes(fs, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file: one PUT on object
    stores, a temporary renamed elsewhere (removed if the write fails)."""
    if writes_atomically(fs):
        fs.pipe_file(path, data)
        return
    out = AtomicFile(fs, path)
    try:
        out.file.write(data)
    except BaseException:
        out.abort()
        raise
    out.commit()
