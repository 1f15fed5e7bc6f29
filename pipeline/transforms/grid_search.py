"""The smallest level on a grid at which each item passes a test, found by bisection for many
items at once (``--privacy-target``). No Ray, no model: the caller supplies ``attempt`` (make
outputs for some items at one level, as one batch) and ``judge`` (does each output pass).

The test is assumed monotone in the level (more noise, less of the source left): bisection
then finds the smallest passing grid level in ``ceil(log2(len(grid) + 1))`` attempts per item,
and an item that passes nowhere on the grid is reported as unmet. Items whose bisection sits
at the same level in a round go through the model together. A condition that goes the other
way (a face still found: true at low levels, lost at high ones) must not steer the search: the
caller checks it at the level found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class GridResult:
    level: float | None = None          # the smallest passing grid level (None: none passed)
    output: object = None               # the output made at that level
    tried: list[tuple[float, bool, object]] = field(default_factory=list)   # (level, passed, judge's detail)


def attempts_needed(grid_size: int) -> int:
    """Attempts bisection spends per item at most."""
    return max(1, (grid_size).bit_length())


def smallest_passing(n_items: int, grid: Sequence[float],
                     attempt: Callable[[list[int], float], list],
                     judge: Callable[[list[int], list], list[tuple[bool, object]]]) -> list[GridResult]:
    """Per item: the smallest ``grid`` level whose output ``judge`` passes, with that output and
    every (level, passed, detail) tried. ``grid`` must be increasing."""
    if list(grid) != sorted(set(grid)):
        raise ValueError(f"the level grid must be strictly increasing, got {list(grid)}")
    lo, hi = [-1] * n_items, [len(grid)] * n_items          # grid[lo] fails (or none), grid[hi] passes (or none)
    results = [GridResult() for _ in range(n_items)]
    while True:
        open_items = [i for i in range(n_items) if hi[i] - lo[i] > 1]
        if not open_items:
            break
        by_mid: dict[int, list[int]] = {}
        for i in open_items:
            by_mid.setdefault((lo[i] + hi[i]) // 2, []).append(i)
        for mid, items in sorted(by_mid.items()):
            outputs = attempt(items, grid[mid])
            for i, output, (passed, detail) in zip(items, outputs, judge(items, outputs)):
                results[i].tried.append((grid[mid], passed, detail))
                if passed:
                    hi[i] = mid
                    results[i].level, results[i].output = grid[mid], output
                else:
                    lo[i] = mid
    return results
