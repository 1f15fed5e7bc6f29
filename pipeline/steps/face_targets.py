"""``--privacy-target`` with ``--region faces``: each face (each crop sent to the model) gets
the smallest t of the grid at which the loop recognizers call its regenerated crop a different
person and a face is still found in it: the search of ``pipeline.steps.privacy_target`` over
crops, batched by t and by ``--batch-size`` faces, each face's noise the same at every t. No Ray."""
from __future__ import annotations

from pipeline.errors import GENERATION_FAILED, SampleError
from pipeline.steps.privacy_target import search_targets


def search_face_targets(regions, jobs: list, decoded: list) -> dict:
    """FaceResult (or SampleError) per job, keyed like ``FaceRegions._run``'s results."""
    from pipeline.steps.face_regions import FaceResult, job_key

    cfg = regions.p.cfg
    if not jobs:
        return {}

    def make(items: list[int], t: float):
        pixels, result = regions.generate_batch([jobs[i] for i in items], decoded, t)
        return list(pixels), result

    try:
        found = search_targets([regions.model_inputs(job, decoded)[0] for job in jobs], make, regions.p.judge,
                               cfg.t_grid, cfg.batch_size, cfg.unmet)
    except Exception as exc:
        error = SampleError(GENERATION_FAILED, f"generation failed: {type(exc).__name__}: {exc}")
        return {job_key(j.image, j.level, j.variant, j.plan): error for j in jobs}
    return {job_key(j.image, j.level, j.variant, j.plan): FaceResult(
        r.pixels, r.timestep, r.model_evals, r.seconds, r.t, "met" if r.met else "not_met", r.trials)
        for j, r in zip(jobs, found)}
