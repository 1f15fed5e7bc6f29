"""An object store simulated in memory, as an fsspec filesystem (``simstore://bucket/key``),
to count what planning a rerun costs in requests (tests/test_planning_scale.py).

It follows S3's request model as s3fs drives it:

* a flat key space; "directories" are key prefixes;
* ``ls`` is ListObjectsV2 with a ``/`` delimiter, ``find`` the same without one (s3fs's
  ``find(path, prefix=...)`` lists only keys starting with ``path/prefix``): one request per page
  of ``PAGE`` keys (common prefixes count toward a page, as on S3); an empty listing is followed
  by one more LIST, as s3fs does to see whether the path is an object;
* ``info`` is a HEAD, and for a missing key one more LIST of one key (is it a prefix?), as s3fs
  does; both are skipped where the parent's cached listing has the answer (s3fs's ``dircache``);
* ``cat_file`` is one GET; ``open`` for reading a HEAD then one GET per block; a write is one PUT
  when the file is closed (one per 5 MiB part beyond), atomic as S3's (``atomic_put``: outputs
  are written to their final names, ``pipeline.io.storage``); ``mv`` a server-side COPY plus a
  DELETE;
* listing entries carry ``size``, ``ETag`` (MD5 of the bytes) and ``LastModified`` at one-second
  resolution, as S3's do;
* listings are cached per instance and kept until invalidated or written under, as s3fs keeps
  them, so a planner that reused a cached listing would see it stale.

Every request is counted by kind and charged a fixed latency on a simulated clock (nothing
sleeps). ``lagging_listings`` makes listings show the store as it was when it was entered while
writes go on, as an eventually consistent store's listings may (HEAD and GET see the writes).
"""
from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import threading
from collections import Counter
from contextlib import contextmanager

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

PAGE = 1000
PART = 5 << 20


class SimulatedObjectStore(AbstractFileSystem):
    protocol = "simstore"
    root_marker = ""
    latency = 0.03                           # seconds charged per request
    atomic_put = True                        # an upload appears whole when complete, as on S3

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.objects = {}
        self.requests: Counter = Counter()
        self.listed_state: dict | None = None     # what listings show, if they lag behind writes
        self._lock = threading.RLock()

    # -- accounting --------------------------------------------------------------------------

    def _request(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.requests[kind] += n

    @property
    def simulated_seconds(self) -> float:
        return sum(self.requests.values()) * self.latency

    @contextmanager
    def counting(self):
        """Yields a Counter filled with the requests made inside the block."""
        before = Counter(self.requests)
        seen: Counter = Counter()
        try:
            yield seen
        finally:
            seen.update(self.requests - before)

    @contextmanager
    def lagging_listings(self):
        """Listings show the store as it is now until the block ends, whatever is written inside."""
        self.listed_state = dict(self.objects)
        try:
            yield
        finally:
            self.listed_state = None

    # -- objects -----------------------------------------------------------------------------

    @property
    def objects(self) -> dict[str, tuple[bytes, str, dt.datetime]]:
        """key -> (bytes, ETag, LastModified); assign a dict to replace the store's contents."""
        return self._objects

    @objects.setter
    def objects(self, value: dict) -> None:
        self._objects, self._sorted = value, sorted(value)     # keys in order, for listings by prefix

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("simstore://"):
            path = path[len("simstore://"):]
        return path.strip("/")

    def put_object(self, key: str, data: bytes, when: dt.datetime | None = None) -> None:
        """Store an object as another writer would (no request counted here, no cache touched)."""
        key = self._strip_protocol(key)
        when = (when or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
        with self._lock:
            if key not in self._objects:
                bisect.insort(self._sorted, key)
            self._objects[key] = (data, f'"{hashlib.md5(data).hexdigest()}"', when)

    def _delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(key, None) is None:
                raise FileNotFoundError(key)
            del self._sorted[bisect.bisect_left(self._sorted, key)]

    def _entry(self, key: str, state: dict | None = None) -> dict:
        data, etag, when = (self.objects if state is None else state)[key]
        return {"name": key, "Key": key, "size": len(data), "Size": len(data), "type": "file", "ETag": etag,
                "LastModified": when, "StorageClass": "STANDARD"}

    @staticmethod
    def _dir_entry(key: str) -> dict:
        return {"name": key, "Key": key, "size": 0, "Size": 0, "type": "directory", "StorageClass": "DIRECTORY"}

    def _listed(self) -> dict:
        return self.objects if self.listed_state is None else self.listed_state

    def _keys_under(self, prefix: str, state: dict | None = None) -> list[str]:
        with self._lock:
            if state is not None and state is not self._objects:
                return sorted(k for k in state if k.startswith(prefix))
            start = bisect.bisect_left(self._sorted, prefix)
            end = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
            return self._sorted[start:end]

    def _list(self, path: str, delimiter: bool, prefix: str = "") -> list[dict]:
        """One ListObjectsV2 call, paginated: a request per page."""
        start, state = f"{path}/" if path else "", self._listed()
        files, dirs = [], set()
        for key in self._keys_under(start + prefix, state):
            rest = key[len(start):]
            if delimiter and "/" in rest:
                dirs.add(start + rest.split("/", 1)[0])
            else:
                files.append(self._entry(key, state))
        self._request("list", max(1, math.ceil((len(files) + len(dirs)) / PAGE)))
        return files + [self._dir_entry(d) for d in sorted(dirs)]

    def ls(self, path, detail=True, refresh=False, **kwargs):
        path = self._strip_protocol(path)
        if not refresh and path in self.dircache:
            entries = self.dircache[path]
        else:
            entries = self._list(path, delimiter=True)
            if entries:
                self.dircache[path] = entries
            else:
                self._request("list")          # s3fs lists the parent to see whether it is an object
                state = self._listed()
                entries = [self._entry(path, state)] if path in state else []
        return entries if detail else [e["name"] for e in entries]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, prefix="", **kwargs):
        if maxdepth or withdirs:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        path = self._strip_protocol(path)
        entries = self._list(path, delimiter=False, prefix=prefix)
        if not entries:
            try:
                entries = [self.info(path)]
            except FileNotFoundError:
                entries = []
            entries = [e for e in entries if e["type"] == "file"]
        return {e["name"]: e for e in entries} if detail else [e["name"] for e in entries]

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        parent = self._parent(path)
        if parent in self.dircache:
            for entry in self.dircache[parent]:
                if entry["name"] == path:
                    return entry
        self._request("head")
        with self._lock:
            if path in self.objects:
                return self._entry(path)
        self._request("list")
        if self._keys_under(f"{path}/"):
            return self._dir_entry(path)
        raise FileNotFoundError(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        self._request("get")
        with self._lock:
            if path not in self.objects:
                raise FileNotFoundError(path)
            data = self.objects[path][0]
        return data[start:end]

    def pipe_file(self, path, value, **kwargs):
        self._request("put", max(1, math.ceil(len(value) / PART)))
        self.put_object(path, bytes(value))
        self.invalidate_cache(self._parent(self._strip_protocol(path)))

    def cp_file(self, path1, path2, **kwargs):
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        self._request("copy")
        with self._lock:
            if path1 not in self.objects:
                raise FileNotFoundError(path1)
            data, etag, _ = self.objects[path1]
        self.put_object(path2, data)
        self.invalidate_cache(self._parent(path2))

    def rm_file(self, path):
        path = self._strip_protocol(path)
        self._request("delete")
        self._delete(path)
        self.invalidate_cache(self._parent(path))

    def rm(self, path, recursive=False, maxdepth=None):
        for p in [path] if isinstance(path, str) else path:
            self.rm_file(p)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        self.cp_file(path1, path2)
        self.rm_file(path1)

    def mkdir(self, path, create_parents=True, **kwargs):
        pass                                  # prefixes need no creating

    def makedirs(self, path, exist_ok=False):
        pass

    def invalidate_cache(self, path=None):
        if path is None:
            self.dircache.clear()
            return
        path = self._strip_protocol(path)
        while True:
            self.dircache.pop(path, None)
            if not path:
                break
            path = self._parent(path)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        return SimulatedFile(self, self._strip_protocol(path), mode, block_size=block_size or PART,
                             autocommit=autocommit, cache_type="readahead")


class SimulatedFile(AbstractBufferedFile):
    def _fetch_range(self, start, end):
        return self.fs.cat_file(self.path, start, end)

    def _initiate_upload(self):
        self._parts: list[bytes] = []

    def _upload_chunk(self, final=False):
        self._parts.append(self.buffer.getvalue())
        if final:
            data = b"".join(self._parts)
            self.fs._request("put", max(1, math.ceil(len(data) / PART)))
            self.fs.put_object(self.path, data)
            self.fs.invalidate_cache(self.fs._parent(self.path))
        return True


fsspec.register_implementation(SimulatedObjectStore.protocol, SimulatedObjectStore, clobber=True)
