"""``--privacy-target`` as a level policy any unit transform can run under (whole images, face
crops): per unit, the smallest t of ``--t-grid`` at which the loop's judge calls its output a
different person (by ``--margin``) and a face is still found in it. No Ray, no files.

Bisection over the grid (``pipeline.transforms.grid_search``), batched: in each round the units
whose search sits at the same t go through the method together, at most ``--batch-size`` at a
time. Every attempt at a unit draws its noise from a fresh generator seeded by (seed, key): the
same noise at every t (common random numbers), so the only thing that changes between attempts
is t, and an output does not depend on what else was in its batch. The search follows identity
only (it grows with t); whether a face is still found (it shrinks with t) is checked at the t it
ends on. Units where no grid t meets the target follow ``--unmet``: ``drop`` (not published,
an error row ``target_not_met``) or ``max`` (published at the largest t, ``privacy = not_met``).
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from pipeline.transforms.grid_search import smallest_passing
from pipeline.transforms.units import Unit, UnitResult, failed

log = logging.getLogger(__name__)

TARGET = "target"          # the one slot of a target search: each unit at the t it chose


@dataclass
class TargetResult:
    t: float                  # the chosen t (the largest of the grid when not met)
    pixels: object            # the output at t (None: not met, and not needed for --unmet drop)
    met: bool
    timestep: int | None
    model_evals: int          # over every attempt
    seconds: float
    trials: list[dict]        # every t tried, in order, with its verdict (schemas.TRIAL)


def target_met(found) -> bool:
    """The search found a t where every recognizer calls the output another person; the target
    is met when a face is still found there too (more noise would only lose it further)."""
    return found.level is not None and next(d["passed"] for lv, _, d in found.tried if lv == found.level)


def search_targets(sources: list, make: Callable, judge, grid, batch_size: int, unmet: str) -> list[TargetResult]:
    """Per source (uint8 image in the judge's space): ``make(items, t)`` returns the outputs of
    those items at t (uint8) with the MethodResult; ``judge`` is a ``PrivacyJudge``."""
    embeddings = judge.embed_sources(sources)
    spent, seconds, timesteps, at_max = [0] * len(sources), [0.0] * len(sources), {}, {}

    def attempt(items: list[int], t: float) -> list:
        made = []
        for start in range(0, len(items), batch_size):
            part = items[start:start + batch_size]
            started = time.time()
            pixels, result = make(part, t)
            timesteps[t] = result.level_used
            for i, px in zip(part, pixels):
                spent[i] += result.model_evals
                seconds[i] += (time.time() - started) / len(part)
                if t == grid[-1]:
                    at_max[i] = px
            made.extend(pixels)
        return made

    def judging(items: list[int], outputs: list) -> list[tuple[bool, dict]]:
        return [(v.different, v.as_dict()) for v in judge.judge([embeddings[i] for i in items], outputs)]

    found = smallest_passing(len(sources), grid, attempt, judging)
    missing = [i for i, f in enumerate(found) if not target_met(f) and i not in at_max]
    if missing and unmet == "max":
        attempt(missing, grid[-1])
    results = []
    for i, f in enumerate(found):
        met = target_met(f)
        t = f.level if met else grid[-1]
        results.append(TargetResult(t, f.output if met else at_max.get(i), met, timesteps.get(t), spent[i], seconds[i],
                                    [{"t": lv, **detail} for lv, _, detail in f.tried]))
    return results


class TargetSearch:
    """The level policy of ``--privacy-target``: one slot, ``TARGET``, each unit at its own t."""
    slots = (TARGET,)

    def __init__(self, grid, judge, unmet: str, batch_size: int):
        self.grid, self.judge, self.unmet, self.batch_size = tuple(grid), judge, unmet, batch_size

    @property
    def recognizer_names(self) -> str:
        return ",".join(r.name for r in self.judge.recognizers)

    def run(self, units: list[Unit], generate) -> dict[tuple[int, str], UnitResult]:
        if not units:
            return {}

        def make(items: list[int], t: float):
            pixels, result = generate([units[i] for i in items], t)
            return list(pixels), result

        try:
            found = search_targets([u.pixels for u in units], make, self.judge, self.grid, self.batch_size, self.unmet)
        except Exception as exc:
            log.error("privacy-target search over %d units failed:\n%s", len(units), traceback.format_exc())
            return {(i, TARGET): UnitResult(None, error=failed(exc)) for i in range(len(units))}
        return {(i, TARGET): UnitResult(r.pixels, r.timestep, r.model_evals, r.seconds, t=r.t,
                                        privacy="met" if r.met else "not_met", trials=r.trials)
                for i, r in enumerate(found)}
