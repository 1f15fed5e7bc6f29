"""One run at a time per run directory.

Two runs on the same directory would delete each other's temporaries and could remove a
shard another run just finished, so a run holds ``<run_dir>/.run-lock.json`` from before it
plans until after it merges its manifest; a second run is refused with who holds it.

* Local (and NFS) directories: an exclusive ``flock`` on the file. The kernel releases it when
  the holder exits, however it dies (SIGKILL included), so a killed run's lock is taken over at
  once and safely: there is no window in which two runs both believe they hold it.
* Object stores (``s3://``, ``gs://``, ...), which have no locks: a lease object naming its
  owner and an expiry, renewed by a background thread while the run lives (every lease/3).
  A run takes over a lease that has expired; after writing its own it reads it back and
  proceeds only if it is still the owner. Without a conditional write this narrows the race
  between two runs starting within the same second but cannot close it, so schedule one
  writer per dataset on object storage (the README says so).

Acquiring also proves the output is writable before any work starts.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import socket
import threading
import time
import uuid

import fsspec

from pipeline.errors import UserError

LOCK_NAME = ".run-lock.json"
LEASE_SECONDS = 300.0


class RunLocked(UserError):
    """Another live run holds the run directory."""


class RunLock:
    def __init__(self, run_dir: str, lease_seconds: float = LEASE_SECONDS, settle_seconds: float = 1.0):
        self.run_dir = run_dir.rstrip("/")
        self.url = posixpath.join(self.run_dir, LOCK_NAME)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        self.local = "file" in _protocols(self.fs)
        self.lease_seconds, self.settle_seconds = lease_seconds, settle_seconds
        self.owner = uuid.uuid4().hex
        self._fd: int | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def info(self) -> dict:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "expires_at": None if self.local else time.time() + self.lease_seconds}

    def acquire(self) -> None:
        try:
            self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
            if self.local:
                self._acquire_flock()
            else:
                self._acquire_lease()
        except (RunLocked, UserError):
            raise
        except OSError as exc:
            raise UserError(f"cannot write to the run directory {self.run_dir} ({type(exc).__name__}: {exc}); "
                            f"check --output and its permissions") from None

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join(timeout=10)
            self._renewer = None
            try:
                if (self._read() or {}).get("owner") == self.owner:
                    self.fs.rm(self.path)
            except OSError:
                pass

    # -- local: flock ----------------------------------------------------------------------

    def _acquire_flock(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(os.pread(fd, 1 << 16, 0))
            os.close(fd)
            raise RunLocked(self._refusal(holder, "it is released as soon as that run ends, even if it is killed"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.info()).encode(), 0)
        self._fd = fd

    # -- object stores: a lease ------------------------------------------------------------

    def _acquire_lease(self) -> None:
        holder = self._read()
        if holder is not None and (holder.get("expires_at") or 0) > time.time():
            raise RunLocked(self._refusal(holder, f"its lease expires at {_when(holder['expires_at'])} if that run "
                                                  f"has died"))
        self._write_lease()
        time.sleep(self.settle_seconds)      # a run that wrote at the same moment: last writer wins
        holder = self._read()
        if (holder or {}).get("owner") != self.owner:
            raise RunLocked(self._refusal(holder or {}, "another run took the lease at the same moment"))
        self._renewer = threading.Thread(target=self._renew, name="run-lock-lease", daemon=True)
        self._renewer.start()

    def _write_lease(self) -> None:
        with self.fs.open(self.path, "wb") as f:
            f.write(json.dumps(self.info()).encode())

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self._write_lease()
            except OSError:
                pass      # the next renewal tries again; the lease is long enough to miss a few

    def _read(self) -> dict | None:
        try:
            return _parse(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def _refusal(self, holder: dict, release: str) -> str:
        who = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('started_at', '?')}"
        return (f"run directory {self.run_dir} is in use by another run ({who}); wait for it to finish "
                f"({release}), or write to another --output")


def _parse(data: bytes) -> dict:
    try:
        value = json.loads(data)
        return value if isinstance(value, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _protocols(fs) -> tuple:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")
