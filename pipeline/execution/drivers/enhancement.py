"""The resolution-enhancement comparison (the Boomerang paper's third application) as a driver:
plain upsampling against Boomerang (one pass, cascaded) and a Cold Diffusion super-resolution
restorer, each method a normal anonymize job on the cluster (same rows, manifests, reruns).

Each input is brought to the comparison's resolution (the high-resolution reference), downsampled
by ``factor`` and upsampled back: the baseline, and the input of the Boomerang runs. The cold
restorer restores the nearest-upsampled version, exactly its degradation at s = log2(factor). The
low-resolution inputs are made on the driver through the engine, planned like any job's inputs.
"""
from __future__ import annotations

import hashlib
import json
import math
import posixpath
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.settings import Settings, non_negative_int, positive_int, setting
from pipeline.transforms.enhancement import UPSAMPLERS


@dataclass(frozen=True)
class EnhanceSettings(Settings):
    inputs: tuple[str, ...] = setting(help="high-resolution shards", flag="--input", nargs="+")
    output: str = setting(help="output root: the runs, enhance-inputs/ and enhance-report/ go under it")
    model: str = setting(help="diffusion model for Boomerang")
    sr_restorer: str | None = setting(None, "a cold super-resolution restorer (optional)")
    factor: int = setting(4, "downsampling factor (a power of 2)", type=positive_int)
    upsample: str = setting("bicubic", "the baseline upsampler", choices=tuple(sorted(UPSAMPLERS)))
    t: float = setting(0.1, "Boomerang t for the one-pass method")
    cascade: int = setting(3, "passes of the cascaded method (0: skip it)", type=non_negative_int)
    cascade_t: float = setting(0.05, "Boomerang t of each cascaded pass")
    steps: int = setting(100, "sampler steps for a full (t = 1) reverse process", type=positive_int)
    resolution: int | None = setting(None, "default: the diffusion model's", type=positive_int)
    batch_size: int = setting(16, "images per model batch", type=positive_int)
    seed: int = setting(0, "run seed")
    address: str | None = setting(None, "Ray cluster address (default: a private local cluster)")
    cpu_threads: int | None = setting(None, "torch threads per CPU worker", type=positive_int)

    def check(self, job=None) -> None:
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise UserError(f"--factor must be a power of 2, got {self.factor}")


def low_resolution_shards(inputs: list[str], out: str, resolution: int, factor: int, upsample: str,
                          image_field: str | None = None) -> dict[str, list[str]]:
    """Per input shard: the references at ``resolution`` and their low-resolution versions
    upsampled back with ``upsample`` and with nearest, each kind a shard under ``out/<kind>/``.
    Planned like every job (``pipeline.execution.planning``): a rerun makes only the shards that are
    new, whose input changed, or that were made with other settings; each input's completion
    marker is ``out/manifest/<stem>.parquet``."""
    from pipeline.engine.loop import TarSink, TaskFiles, run_task
    from pipeline.engine.tasks import ShardTask
    from pipeline.execution.drivers.common import save_checkpoint
    from pipeline.execution.planning import plan_inputs, task_rows
    from pipeline.transforms.enhancement import LowResolutionVersions

    from pipeline.execution.withdrawal import withdraw

    transform = LowResolutionVersions(resolution, factor, upsample, image_field)
    settings = hashlib.sha256(json.dumps([resolution, factor, upsample, image_field]).encode()).hexdigest()
    plan = plan_inputs(inputs, posixpath.join(out, "manifest"), config_hash=settings)
    if plan.missing:
        raise UserError(f"{len(plan.missing)} input shard(s) not found, e.g. {plan.missing[0]}")
    # What was made from inputs that are gone goes (every upsampling's files: other settings too).
    withdrawn = withdraw(plan.checkpoint, plan.gone, lambda url: [
        posixpath.join(out, kind, posixpath.basename(ShardTask.for_shard(out, url).output_url))
        for kind in ("reference", *sorted(UPSAMPLERS), "nearest")])
    if withdrawn.failed:
        raise UserError(f"could not withdraw the low-resolution inputs of {withdrawn.failed[0][0]}: {withdrawn.failed[0][1]}")
    tasks = [ShardTask.for_shard(out, s.url, s.size, s.version) for s in plan.pending]
    rows = []
    for task in tasks:
        name = posixpath.basename(task.output_url)
        files = TaskFiles(sinks={kind: TarSink(posixpath.join(out, kind, name)) for kind in transform.kinds})
        rows.append(run_task(task, transform, task.source(transform), files, manifest_schema=task.manifest_schema,
                             manifest_base=task.manifest_base(config_hash=settings) | {
                                 "output_shard": files.sinks["reference"].url}))
    save_checkpoint(plan.checkpoint.updated(task_rows(tasks, rows)))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise UserError(f"could not make the low-resolution inputs of {len(failed)} shard(s), e.g. "
                        f"{failed[0]['input_shard']}: {failed[0]['error']}")
    names = [posixpath.basename(ShardTask.for_shard(out, url).output_url) for url in inputs]
    return {kind: [posixpath.join(out, kind, name) for name in names] for kind in transform.kinds}


def run_enhancement(s: EnhanceSettings) -> int:
    """Make the inputs, run every method as a job, compare against the references; returns the
    exit status (1 when a method's job had a failed shard)."""
    from metrics.fidelity import load_lpips, why_lpips_unavailable
    from metrics.inception import load_fid_inception, why_fid_unavailable
    from pipeline.config.cli import exit_code, print_results
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.io.records import finished_files
    from pipeline.io.shards import expand_shard_urls
    from pipeline.models.loading import load_model
    from pipeline.reports.enhancement import read_images, write_enhancement_report

    s.check()
    resolution = s.resolution or load_model(s.model, device="cpu").resolution
    if s.sr_restorer:
        trained_at = load_model(s.sr_restorer, device="cpu").resolution
        if trained_at != resolution:
            raise UserError(f"--sr-restorer was trained at {trained_at} px but the comparison runs at {resolution} px: "
                            f"train it with --resolution {resolution}, or pass --resolution {trained_at}")
    made = low_resolution_shards(expand_shard_urls(list(s.inputs)), posixpath.join(s.output, "enhance-inputs"),
                                 resolution, s.factor, s.upsample)
    # keys="keep": the comparison matches outputs to references by key (nothing here is published).
    common = dict(job="anonymize", keys="keep", output=s.output, seed=s.seed, batch_size=s.batch_size,
                  resolution=resolution, address=s.address, cpu_threads=s.cpu_threads)
    jobs = {f"boomerang t={s.t:g}": JobConfig.build(inputs=tuple(made[s.upsample]), model=s.model, t=(s.t,),
                                                    steps=s.steps, **common)}
    if s.cascade > 0:
        jobs[f"boomerang {s.cascade} x t={s.cascade_t:g}"] = JobConfig.build(
            inputs=tuple(made[s.upsample]), model=s.model, t=(s.cascade_t,), cascade=s.cascade, steps=s.steps, **common)
    if s.sr_restorer:
        jobs["cold super-resolution (TACoS)"] = JobConfig.build(
            inputs=tuple(made["nearest"]), model=s.sr_restorer, method="cold-superres",
            s=(int(math.log2(s.factor)),), **common)
    runs, failed = {}, []
    for name, cfg in jobs.items():
        if exit_code(run_job(cfg)):
            failed.append(name)
        runs[name] = resolve_config(cfg).run_dir
    reference = read_images(made["reference"])
    methods = {f"{s.upsample} upsampling": read_images(made[s.upsample])}
    methods.update({name: read_images(finished_files(posixpath.join(run, "shards"), ".tar")) for name, run in runs.items()})
    fid_reason, lpips_reason = why_fid_unavailable(), why_lpips_unavailable()
    notes = [f"{name} skipped: {reason}" for name, reason in (("FID/KID", fid_reason), ("LPIPS", lpips_reason)) if reason]
    # Each method is scored on the images it made; missing ones are said, never silently averaged away.
    for name, images in list(methods.items()):
        if len(images) < len(reference):
            where = f" (error rows in {runs[name]}/rows)" if name in runs else ""
            notes.append(f"{name}: {len(images)} of {len(reference)} images made{where}")
        if not images:
            del methods[name]
    report_dir = posixpath.join(s.output, "enhance-report")
    summary = write_enhancement_report(
        report_dir, reference, methods, notes, f"Resolution enhancement x{s.factor} ({s.upsample})",
        {"runs": runs, "factor": s.factor, "resolution": resolution},
        lpips=load_lpips(allow_download=False) if lpips_reason is None else None,
        inception=load_fid_inception() if fid_reason is None else None)
    print_results(summary, notes, report_dir)
    return 1 if failed else 0
