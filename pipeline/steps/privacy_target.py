"""``--privacy-target``: per image, the smallest t of ``--t-grid`` at which the loop recognizers
call the output a different person (by ``--margin``) and a face is still found in it. No Ray.

Bisection over the grid (``pipeline.steps.grid_search``), batched: in each round the images
whose search sits at the same t go through the method together. Every attempt at an image
draws its noise from a fresh generator seeded by (seed, key): the same noise at every t (common
random numbers), so the only thing that changes between attempts is t, and an image's output
does not depend on what else was in its batch. Images where no grid t meets the target follow
``--unmet``: ``drop`` (not published, an error row ``target_not_met``) or ``max`` (published at
the largest t, marked ``privacy = not_met``).
"""
from __future__ import annotations

import json
import logging
import time
import traceback

import torch

from pipeline.diffusion.seeds import sample_generators, sample_seed
from pipeline.errors import GENERATION_FAILED, TARGET_NOT_MET
from pipeline.io.images import encode_image, output_field, to_model_range, to_uint8
from pipeline.steps.grid_search import smallest_passing
from pipeline.steps.outputs import METADATA_FIELD, carried_fields, output_key, output_metadata

log = logging.getLogger(__name__)


class ModelFailed(Exception):
    """Generation failed for a batch of the search (its images become error rows)."""


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
        embeddings = self.judge.embed_sources(sources)
        spent = [0] * len(decoded)
        timesteps: dict[float, int] = {}
        at_max: dict[int, object] = {}           # outputs at the largest t: what --unmet max publishes
        started = time.time()

        def attempt(items: list[int], t: float) -> list:
            keys = [decoded[i][0].key for i in items]
            try:
                with torch.inference_mode():
                    generators = sample_generators(cfg.seed, keys, [0] * len(items))     # the same noise at every t
                    x0 = p.model.encode(to_model_range([sources[i] for i in items]), generators)
                    result = p.method.run(p.model, cfg, x0, t, generators)
                    pixels = to_uint8(p.model.decode(result.samples))
            except Exception as exc:
                log.error("batch of %d failed:\n%s", len(items), traceback.format_exc())
                raise ModelFailed(f"generation failed: {type(exc).__name__}: {exc}") from exc
            timesteps[t] = result.level_used
            for i, out in zip(items, pixels):
                spent[i] += result.model_evals
                if t == cfg.t_grid[-1]:
                    at_max[i] = out
            return list(pixels)

        def judge(items: list[int], outputs: list) -> list[tuple[bool, dict]]:
            verdicts = self.judge.judge([embeddings[i] for i in items], outputs)
            return [(v.different, v.as_dict()) for v in verdicts]     # the search follows identity only

        try:
            results = smallest_passing(len(decoded), cfg.t_grid, attempt, judge)
            unmet_at_max = [i for i, r in enumerate(results) if not target_met(r) and i not in at_max]
            if unmet_at_max and cfg.unmet == "max":
                attempt(unmet_at_max, cfg.t_grid[-1])
        except ModelFailed as exc:
            return [{**base, **p.image_columns(s, f, im), "key": s.key, "source_key": s.key, "status": "error",
                     "error": str(exc), "error_kind": GENERATION_FAILED} for s, f, im in decoded]
        seconds = (time.time() - started) / len(decoded)
        rows, pairs = [], PairBatch.empty()
        for i, ((sample, field, image), found) in enumerate(zip(decoded, results)):
            t, pixels, met = found.level, found.output, target_met(found)
            if not met:
                t, pixels = cfg.t_grid[-1], at_max.get(i)
            row = {**base, **p.image_columns(sample, field, image),
                   "key": output_key(cfg, p.method, sample.key, t, 0, p.secret),
                   "source_key": sample.key, "t": t, "variant": 0, "seed": sample_seed(cfg.seed, sample.key, 0),
                   "timestep": timesteps.get(t), "model_evals": spent[i], "seconds": seconds,
                   "privacy": "met" if met else "not_met", "loop_recognizers": ",".join(self.judge_names()),
                   "privacy_trials": json.dumps([{"t": lv, **detail} for lv, _, detail in found.tried], sort_keys=True)}
            if not met and cfg.unmet == "drop":
                rows.append({**row, "status": "error", "error_kind": TARGET_NOT_MET,
                             "error": f"no t in {list(cfg.t_grid)} meets the privacy target (--unmet drop)"})
                continue
            row.update(status="ok", error=None, error_kind=None)
            out_field = output_field(field)
            writer.write(row["key"], {**carried_fields(cfg, sample.fields), out_field: encode_image(pixels, out_field),
                                      METADATA_FIELD: output_metadata(cfg, row, p.config_hash, privacy=row["privacy"])})
            pairs.append(row["key"], sample.key, t, 0, image.pixels, pixels)
            rows.append(row)
        if scorer is not None:
            scorer.add(pairs)
        return rows

    def judge_names(self) -> list[str]:
        return [r.name for r in self.judge.recognizers]


def target_met(found) -> bool:
    """The search found a t where every recognizer calls the output another person; the target
    is met when a face is still found there too (more noise would only lose it further)."""
    return found.level is not None and next(d["passed"] for lv, _, d in found.tried if lv == found.level)
