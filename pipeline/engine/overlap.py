"""Overlapping a worker's CPU stages with its model, for every task the engine runs: a
prefetching reader thread, a writer thread, and the clock that says where each task's seconds
went. No Ray.

The model runs on the calling thread. While it works on one chunk, the reader thread reads
and decodes the next ones and the writer thread encodes and writes the previous outputs, so
an accelerator is never left waiting for Pillow or the tar writer. Decoding, resizing,
encoding and zlib release the GIL, so the threads overlap for real. Both queues are short
(two chunks ahead, sixteen outputs behind): memory stays bounded whatever the shard size.

Errors cross back to the calling thread: a reader that fails (an unreadable shard) raises
from the iteration, a writer that fails raises from the next ``write`` or from ``close``.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from pipeline.io.images import encode_image

STAGES = ("read", "model", "write", "waiting")
_DONE = object()


@dataclass
class StageClock:
    """Seconds per stage of one shard: ``read`` (reading and decoding, on the reader thread),
    ``model`` (the calling thread's work between waits), ``write`` (encoding and writing, on
    the writer thread) and ``waiting`` (the calling thread blocked on input or on a full
    writer queue: the time the model sat idle)."""
    read: float = 0.0
    model: float = 0.0
    write: float = 0.0
    waiting: float = 0.0

    @contextmanager
    def waiting_for(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.waiting += time.perf_counter() - started

    def columns(self) -> dict[str, float]:
        """The manifest's per-stage columns."""
        return {f"seconds_{name}": round(getattr(self, name), 3) for name in STAGES}


class Prefetcher:
    """Iterates ``produce()`` on a reader thread, ``depth`` items ahead of the consumer.
    Use as a context manager: leaving it (even on an error) stops the thread."""

    def __init__(self, produce: Callable[[], Iterable], clock: StageClock, depth: int = 2):
        self.produce, self.clock = produce, clock
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="shard-reader", daemon=True)

    def _run(self) -> None:
        try:
            started = time.perf_counter()
            for item in self.produce():
                self.clock.read += time.perf_counter() - started
                if not self._put(item):
                    return
                started = time.perf_counter()
            self.clock.read += time.perf_counter() - started
            self._put(_DONE)
        except BaseException as exc:          # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        while True:
            with self.clock.waiting_for():
                item = self.items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            started, waited = time.perf_counter(), self.clock.waiting
            yield item
            # the consumer's time, less what it spent blocked on the writer (counted as waiting)
            self.clock.model += time.perf_counter() - started - (self.clock.waiting - waited)

    def __enter__(self) -> "Prefetcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


class BackgroundWriter:
    """``write(key, fields, sink)`` returns at once; encoder threads encode the fields given as
    pixel arrays (``encode_image`` by field name) and a writer thread hands the samples to the
    writer of their sink (``writers`` by name) in the order written. Several encoders because one cannot keep up with an accelerator at
    full size (a 256-pixel PNG takes about 75 ms here). ``close()`` waits for everything to be
    written; the first error is raised by the next ``write`` or by ``close``. As a context
    manager, leaving on an error abandons what is still queued (the shard is being aborted)."""

    def __init__(self, writers: dict, clock: StageClock, depth: int = 16, encoders: int = min(4, os.cpu_count() or 1)):
        self.writers, self.clock = writers, clock
        self.items: queue.Queue = queue.Queue(maxsize=depth)      # (sink, key, future of the encoded fields)
        self.encoders = ThreadPoolExecutor(encoders, thread_name_prefix="shard-encoder")
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self.thread.start()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandoned = True
            self.items.put(_DONE)
            self.thread.join()
            self.encoders.shutdown(cancel_futures=True)

    def _run(self) -> None:
        while True:
            item = self.items.get()
            if item is _DONE:
                return
            if self.error is not None or self.abandoned:
                continue                      # drain: the shard has failed already
            started = time.perf_counter()
            try:
                sink, key, encoded = item
                self.writers[sink].write(key, encoded.result())
            except BaseException as exc:
                self.error = exc
            self.clock.write += time.perf_counter() - started

    def write(self, key: str, fields: dict, sink: str = "shards") -> None:
        self._raise_error()
        with self.clock.waiting_for():
            self.items.put((sink, key, self.encoders.submit(encode_fields, fields)))

    def close(self) -> None:
        """Wait until every sample is written; raise the thread's error if there was one."""
        if self.thread.is_alive():
            with self.clock.waiting_for():
                self.items.put(_DONE)
                self.thread.join()
        self.encoders.shutdown()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def encode_fields(fields: dict) -> dict[str, bytes]:
    """Pixel arrays encoded in the format their field names (``png``, ``jpg``, ...); bytes as they are."""
    return {name: encode_image(value, name) if isinstance(value, np.ndarray) else value for name, value in fields.items()}
