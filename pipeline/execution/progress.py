"""A one-line progress display: shards, samples, samples/s and ETA."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_shards: int, stream=None, min_interval: float = 2.0,
                 units: tuple[str, str] = ("shards", "samples")):
        self.total_shards = total_shards
        self.units = units
        self.stream = stream = stream or sys.stderr      # looked up now: sys.stderr may have been replaced
        self.started = time.time()
        self.min_interval = min_interval if stream.isatty() else max(min_interval, 10.0)
        self._last = 0.0

    def line(self, shards_done: int, samples_done: int, samples_in_finished_shards: int) -> str:
        elapsed = max(time.time() - self.started, 1e-9)
        rate = samples_done / elapsed
        eta = "?"
        if shards_done and rate > 0:
            per_shard = samples_in_finished_shards / shards_done
            remaining = max(per_shard * self.total_shards - samples_done, 0.0)
            eta = f"{remaining / rate:.0f}s"
        tasks, items = self.units
        return (f"[{shards_done}/{self.total_shards} {tasks}] {samples_done} {items}, "
                f"{rate:.2f} {items}/s, elapsed {elapsed:.0f}s, ETA {eta}")

    def update(self, shards_done: int, samples_done: int, samples_in_finished_shards: int, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        text = self.line(shards_done, samples_done, samples_in_finished_shards)
        end = "\r" if self.stream.isatty() and not force else "\n"
        print(text, end=end, file=self.stream, flush=True)
