"""Shards and image bytes made by hand: well-formed ones (``write_tar``) and the hostile ones a
stranger's producer could write (``hostile_tar``: any member type, name or size)."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> str:
    """A tar with exactly these members, in this order (for hand-made bad shards)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    return name, data, kind, link


def hostile_tar(path, members, fmt=tarfile.PAX_FORMAT, compress: bool = False) -> str:
    """A tar holding exactly these members (any type), as a hostile producer would write it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    data = gzip.compress(buf.getvalue(), compresslevel=1) if compress else buf.getvalue()
    Path(path).write_bytes(data)
    return str(path)


def trials(cell) -> list[dict]:
    """A ``privacy_trials`` cell as pandas reads it (a list<struct> whose ``distances`` map
    comes back as (recognizer, distance) pairs) as plain trials with a distances dict."""
    return [{**trial, "distances": dict(trial["distances"] or [])} for trial in cell]
