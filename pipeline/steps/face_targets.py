"""``--privacy-target`` with ``--region faces``: each face (each crop sent to the model) gets
the smallest t of the grid at which the loop recognizers call its regenerated crop a different
person and a face is still found in it. The same bisection as whole images
(``pipeline.steps.grid_search``), batched by t and by ``--batch-size`` faces; each face's noise
is the same at every t. No Ray."""
from __future__ import annotations

import json
import time

from pipeline.errors import GENERATION_FAILED, SampleError
from pipeline.steps.grid_search import smallest_passing
from pipeline.steps.privacy_target import target_met


def search_face_targets(regions, jobs: list, decoded: list) -> dict:
    """FaceResult (or SampleError) per job, keyed like ``FaceRegions._run``'s results."""
    from pipeline.steps.face_regions import FaceResult, job_key

    cfg, judge, grid = regions.p.cfg, regions.p.judge, regions.p.cfg.t_grid
    if not jobs:
        return {}
    embeddings = judge.embed_sources([regions.model_inputs(job, decoded)[0] for job in jobs])
    spent, seconds, timesteps, at_max = [0] * len(jobs), [0.0] * len(jobs), {}, {}

    def attempt(items: list[int], t: float) -> list:
        made = []
        for start in range(0, len(items), cfg.batch_size):
            part = items[start:start + cfg.batch_size]
            started = time.time()
            pixels, result = regions.generate_batch([jobs[i] for i in part], decoded, t)
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

    try:
        found = smallest_passing(len(jobs), grid, attempt, judging)
        missing = [i for i, f in enumerate(found) if not target_met(f) and i not in at_max]
        if missing and cfg.unmet == "max":
            attempt(missing, grid[-1])
    except Exception as exc:
        error = SampleError(GENERATION_FAILED, f"generation failed: {type(exc).__name__}: {exc}")
        return {job_key(j.image, j.level, j.variant, j.plan): error for j in jobs}
    results = {}
    for i, (job, f) in enumerate(zip(jobs, found)):
        met = target_met(f)
        t = f.level if met else grid[-1]
        results[job_key(job.image, job.level, job.variant, job.plan)] = FaceResult(
            f.output if met else at_max.get(i, f.output), timesteps.get(t), spent[i], seconds[i], t, "met" if met else "not_met",
            json.dumps([{"t": lv, **detail} for lv, _, detail in f.tried], sort_keys=True))
    return results
