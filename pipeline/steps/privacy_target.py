"""``--privacy-target``: per image, the smallest t of ``--t-grid`` at which the loop recognizers
call the output a different person (by ``--margin``) and a face is still found in it. No Ray.

Bisection over the grid (``pipeline.steps.grid_search``), batched: in each round the images
whose search sits at the same t go through the method together, at most ``--batch-size`` at a
time. Every attempt at an image draws its noise from a fresh generator seeded by (seed, key):
the same noise at every t (common random numbers), so the only thing that changes between
attempts is t, and an image's output does not depend on what else was in its batch. The search
follows identity only (it grows with t); whether a face is still found (it shrinks with t) is
checked at the t it ends on. Images where no grid t meets the target follow ``--unmet``:
``drop`` (not published, an error row ``target_not_met``) or ``max`` (published at the largest
t, marked ``privacy = not_met``). ``search_targets`` is the search; ``PrivacyTarget`` applies it
to whole images, ``pipeline.steps.face_targets`` to face crops.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.diffusion.seeds import sample_generators, sample_seed
from pipeline.errors import GENERATION_FAILED, TARGET_NOT_MET
from pipeline.io.images import output_field, to_model_range, to_uint8
from pipeline.steps.grid_search import smallest_passing
from pipeline.steps.outputs import METADATA_FIELD, carried_fields, output_key, output_metadata

log = logging.getLogger(__name__)


@dataclass
class TargetResult:
    t: float                  # the chosen t (the largest of the grid when not met)
    pixels: object            # the output at t (None: not met, and not needed for --unmet drop)
    met: bool
    timestep: int | None
    model_evals: int          # over every attempt
    seconds: float
    trials: str               # JSON: every t tried with its verdict


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
                                    json.dumps([{"t": lv, **detail} for lv, _, detail in f.tried], sort_keys=True)))
    return results


class PrivacyTarget:
    """The privacy-target path of a ``ShardProcessor`` (its configuration, model and writer)."""

    def __init__(self, processor, judge):
        self.p, self.judge = processor, judge

    def generate(self, decoded: list, base: dict, writer, scorer=None) -> list[dict]:
        from metrics.suite import PairBatch

        cfg, p = self.p.cfg, self.p
        if not decoded:
            return []
        sources = [image.pixels for _, _, image in decoded]

        def make(items: list[int], t: float):
            with torch.inference_mode():
                generators = sample_generators(cfg.seed, [decoded[i][0].key for i in items], [0] * len(items))
                x0 = p.model.encode(to_model_range([sources[i] for i in items]), generators)
                result = p.method.run(p.model, cfg.method_settings, x0, t, generators)
                return list(to_uint8(p.model.decode(result.samples))), result

        try:
            results = search_targets(sources, make, self.judge, cfg.t_grid, cfg.batch_size, cfg.unmet)
        except Exception as exc:
            log.error("privacy-target search over %d images failed:\n%s", len(decoded), traceback.format_exc())
            return [{**base, **p.image_columns(s, f, im), "key": s.key, "source_key": s.key, "status": "error",
                     "error": f"generation failed: {type(exc).__name__}: {exc}", "error_kind": GENERATION_FAILED}
                    for s, f, im in decoded]
        rows, pairs = [], PairBatch.empty()
        for (sample, field, image), found in zip(decoded, results):
            row = {**base, **p.image_columns(sample, field, image),
                   "key": output_key(cfg, p.method, sample.key, found.t, 0, p.secret),
                   "source_key": sample.key, "t": found.t, "variant": 0, "seed": sample_seed(cfg.seed, sample.key, 0),
                   "timestep": found.timestep, "model_evals": found.model_evals, "seconds": found.seconds,
                   "privacy": "met" if found.met else "not_met", "privacy_trials": found.trials,
                   "loop_recognizers": ",".join(r.name for r in self.judge.recognizers)}
            if not found.met and cfg.unmet == "drop":
                rows.append({**row, "status": "error", "error_kind": TARGET_NOT_MET,
                             "error": f"no t in {list(cfg.t_grid)} meets the privacy target (--unmet drop)"})
                continue
            row.update(status="ok", error=None, error_kind=None)
            out_field = output_field(field)
            writer.write(row["key"], {**carried_fields(cfg, sample.fields), out_field: found.pixels,
                                      METADATA_FIELD: output_metadata(cfg, row, p.config_hash, privacy=row["privacy"])})
            pairs.append(row["key"], sample.key, found.t, 0, image.pixels, found.pixels)
            rows.append(row)
        if scorer is not None:
            scorer.add(pairs)
        return rows
