"""What goes through the model, and at which levels. No Ray, no files.

A transform turns its items into ``Unit``s (a whole image, or a face crop with the pixels to
hold) and lets a level policy decide the level(s) each unit is made at: ``FixedLevels`` (every
unit at each of the run's levels) or ``pipeline.transforms.privacy_target.TargetSearch`` (per
unit, the smallest level a judge passes). Either way the model runs through one function,
``UnitGenerator``: seeded generators per unit, encode, the method, decode. Each unit's noise
comes from its own generator, so outputs do not depend on batching.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.diffusion.seeds import sample_generators
from pipeline.errors import GENERATION_FAILED, SampleError
from pipeline.io.images import to_model_range, to_uint8

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One input of the model: an image or a crop at the model's resolution."""
    seed_key: str                       # its generator's key: the sample key (a face: key + face index)
    variant: int
    pixels: np.ndarray                  # uint8 R x R x 3
    keep: np.ndarray | None = None      # (R, R) float32, 1 where the source is held (face regions)


@dataclass
class UnitResult:
    """What the model made of one unit at one level (or why it could not)."""
    pixels: np.ndarray | None
    timestep: int | None = None
    model_evals: int = 0
    seconds: float = 0.0
    t: float | None = None              # the level it was made at (a target search: the one it chose)
    privacy: str | None = None          # a target search: met / not_met
    trials: list[dict] | None = None    # a target search: every level tried, with its verdict (schemas.TRIAL)
    error: SampleError | None = None


class UnitGenerator:
    """``generate(units, level)``: the method's uint8 outputs for ``units`` at ``level``, and its
    MethodResult. The held pixels (``keep``) go to methods that support them."""

    def __init__(self, model, method, settings, seed: int):
        self.model, self.method, self.settings, self.seed = model, method, settings, seed

    def __call__(self, units: list[Unit], level) -> tuple[list[np.ndarray], object]:
        model = self.model
        with torch.inference_mode():
            generators = sample_generators(self.seed, [u.seed_key for u in units], [u.variant for u in units])
            x0 = model.encode(to_model_range([u.pixels for u in units]), generators)
            extra = {}
            if any(u.keep is not None for u in units):
                keep = np.stack([u.keep if u.keep is not None else np.zeros(u.pixels.shape[:2], np.float32)
                                 for u in units])
                extra["keep_mask"] = torch.from_numpy(keep)[:, None].to(x0.device)
            result = self.method.run(model, self.settings, x0, level, generators, **extra)
            return list(to_uint8(model.decode(result.samples))), result


def failed(exc: BaseException) -> SampleError:
    return SampleError(GENERATION_FAILED, f"generation failed: {type(exc).__name__}: {exc}")


class FixedLevels:
    """Every unit at each of ``levels``, ``batch_size`` units per model call. A batch the model
    fails on gives its units a ``generation_failed`` result (the shard is then redone)."""

    def __init__(self, levels: tuple, batch_size: int, t_column):
        self.levels, self.batch_size, self.t_column = tuple(levels), batch_size, t_column

    @property
    def slots(self) -> tuple:
        return self.levels

    def run(self, units: list[Unit], generate) -> dict[tuple[int, object], UnitResult]:
        results: dict = {}
        for level in self.levels:
            for start in range(0, len(units), self.batch_size):
                batch = range(start, min(start + self.batch_size, len(units)))
                started = time.time()
                try:
                    pixels, result = generate([units[i] for i in batch], level)
                except Exception as exc:
                    log.error("a batch of %d failed:\n%s", len(batch), traceback.format_exc())
                    results.update({(i, level): UnitResult(None, error=failed(exc)) for i in batch})
                    continue
                seconds = (time.time() - started) / len(batch)
                for j, i in enumerate(batch):
                    results[(i, level)] = UnitResult(pixels[j], result.level_used, result.model_evals, seconds,
                                                     t=self.t_column(level))
        return results
