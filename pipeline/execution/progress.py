"""Progress of a run: shards, samples, samples/s and ETA. On a terminal one bar that updates in
place (tqdm's, or a plain line rewritten with ``\\r`` where tqdm is missing); into a file or a
pipe (a log, CI, `ray job logs`) plain lines, one when a shard finishes (at most every 10 s) and
otherwise one a minute, so a long run's log stays readable."""
from __future__ import annotations

import sys
import time

QUIET_LINE_EVERY = 60.0       # seconds between lines into a file or pipe while no shard finishes
SHARD_LINE_EVERY = 10.0       # at most this often when shards finish


class Progress:
    def __init__(self, total_shards: int, stream=None, min_interval: float = 2.0,
                 units: tuple[str, str] = ("shards", "samples")):
        self.total_shards = total_shards
        self.units = units
        self.stream = stream = stream or sys.stderr      # looked up now: sys.stderr may have been replaced
        self.started = time.time()
        self.tty = stream.isatty()
        self.min_interval = min_interval
        self._last = 0.0
        self._last_shards = -1
        self._final = None                    # the numbers a forced (final) update showed
        self.bar = self._bar() if self.tty else None

    def _bar(self):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=self.total_shards, unit=self.units[0], file=self.stream, dynamic_ncols=True, leave=True,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]{postfix}")

    def numbers(self, shards_done: int, samples_done: int, samples_in_finished_shards: int) -> str:
        """Samples, samples/s and ETA (by samples: shards differ in size)."""
        elapsed = max(time.time() - self.started, 1e-9)
        rate = samples_done / elapsed
        eta = "?"
        if shards_done and rate > 0:
            per_shard = samples_in_finished_shards / shards_done
            remaining = max(per_shard * self.total_shards - samples_done, 0.0)
            eta = f"{remaining / rate:.0f}s"
        items = self.units[1]
        return f"{samples_done} {items}, {rate:.2f} {items}/s, ETA {eta}"

    def line(self, shards_done: int, samples_done: int, samples_in_finished_shards: int) -> str:
        elapsed = max(time.time() - self.started, 1e-9)
        numbers = self.numbers(shards_done, samples_done, samples_in_finished_shards)
        head, _, eta = numbers.rpartition(", ")
        return f"[{shards_done}/{self.total_shards} {self.units[0]}] {head}, elapsed {elapsed:.0f}s, {eta}"

    def due(self, shards_done: int, now: float) -> bool:
        """Whether an update shows now: on a terminal every ``min_interval``; elsewhere when a
        shard finished (at most every ``SHARD_LINE_EVERY``) or after ``QUIET_LINE_EVERY``."""
        since = now - self._last
        if self.tty:
            return since >= self.min_interval
        if shards_done != self._last_shards:
            return since >= max(self.min_interval, SHARD_LINE_EVERY)
        return since >= QUIET_LINE_EVERY

    def update(self, shards_done: int, samples_done: int, samples_in_finished_shards: int, force: bool = False) -> None:
        now = time.time()
        if not force and not self.due(shards_done, now):
            return
        if force:
            if self._final == (shards_done, samples_done):
                return                        # the final state, already shown
            self._final = (shards_done, samples_done)
        self._last, self._last_shards = now, shards_done
        if self.bar is not None:
            self.bar.n = shards_done
            self.bar.set_postfix_str(self.numbers(shards_done, samples_done, samples_in_finished_shards),
                                     refresh=False)
            self.bar.refresh()
            if force:
                self.bar.close()
                self.bar = None
            return
        text = self.line(shards_done, samples_done, samples_in_finished_shards)
        end = "\r" if self.tty and not force else "\n"
        print(text, end=end, file=self.stream, flush=True)
