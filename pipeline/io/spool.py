"""Samples parked in a local temporary file, found again by key: memory holds only the index.

Two jobs need a shard's samples in an order other than the one they arrive in:

* publishing anonymized outputs in the order of their pseudonyms (``KeyOrderedWriter``): in
  input order, the n-th output of a shard is the n-th input of the public original, which
  links it to its source as surely as its name would;
* scoring an output shard whose order no longer follows its input shard (``FieldSpool``
  lookups of each output's source).
"""
from __future__ import annotations

import tempfile


class FieldSpool:
    """``put(key, fields)`` then ``get(key)``, with the bytes on local disk."""

    def __init__(self):
        self._file = tempfile.TemporaryFile()
        self._index: dict[str, list[tuple[str, int, int]]] = {}
        self._end = 0

    def put(self, key: str, fields: dict[str, bytes]) -> None:
        if key in self._index:
            raise ValueError(f"key {key!r} is already spooled")
        self._file.seek(self._end)
        entries = []
        for name, data in fields.items():
            self._file.write(data)
            entries.append((name, self._end, len(data)))
            self._end += len(data)
        self._index[key] = entries

    def get(self, key: str) -> dict[str, bytes]:
        """The fields of ``key`` (KeyError when it was never put)."""
        fields = {}
        for name, offset, length in self._index[key]:
            self._file.seek(offset)
            fields[name] = self._file.read(length)
        return fields

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FieldSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class KeyOrderedWriter:
    """Takes samples like a shard writer and hands them to ``writer`` sorted by key on
    ``finish`` (before the writer closes). With keys that are keyed hashes, the published
    order is a permutation nobody without the key can undo."""

    def __init__(self, writer):
        self.writer = writer
        self.spool = FieldSpool()

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        self.spool.put(key, fields)

    def finish(self) -> None:
        try:
            for key in sorted(self.spool.keys()):
                self.writer.write(key, self.spool.get(key))
        finally:
            self.spool.close()
