"""Perceptual resolution enhancement (the Boomerang paper's third application), compared with
plain upsampling and a Cold Diffusion super-resolution restorer.

    python jobs/enhance.py --input 'data/faces-{0000..0009}.tar' --output OUT \\
        --model google/ddpm-celebahq-256 --factor 4 --t 0.1 --cascade 3 --cascade-t 0.05 \\
        [--sr-restorer restorers/superres/restorer]

Each input is brought to the model's resolution (the high-resolution reference), downsampled by
--factor, and upsampled back (--upsample bicubic|bilinear): that is the "bicubic" baseline and
the input of Boomerang at a small t (one pass) and of k cascaded passes at a smaller t. The cold
restorer (trained with jobs/train_restoration.py --degradation superres) restores the
nearest-upsampled version, which is exactly its degradation at s = log2(factor). Every method
runs as a normal anonymize job on the cluster (same rows, manifests, reruns); the comparison
against the high-resolution references (PSNR, SSIM, RMS distance, LPIPS and FID/KID where their
weights exist; the columns and PSNR rule of every evaluation) goes to OUT/enhance-report/
(rows.parquet per image, summary.parquet per method, report.html, strips.png).
"""
from __future__ import annotations

import io
import math
import posixpath
import sys
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.config.cli import job_parser, non_negative_int, positive_int, user_errors_exit_2  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

UPSAMPLERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def low_resolution_shards(inputs: list[str], out: str, resolution: int, factor: int, upsample: str,
                          image_field: str | None = None) -> dict[str, list[str]]:
    """Per input shard: the references at ``resolution`` and their low-resolution versions
    upsampled back with ``upsample`` and with nearest (what the cold restorer undoes). Planned
    like every job (``pipeline.steps.planning``): a rerun makes only the shards that are new,
    whose input changed, or that were made with other settings; each input's completion marker
    is ``out/manifest/<stem>.parquet``."""
    import hashlib
    import json

    from pipeline.execution.jobs import save_checkpoint
    from pipeline.io.records import MANIFEST_SCHEMA
    from pipeline.steps.completion import run_to_completion
    from pipeline.steps.planning import plan_inputs, task_rows
    from pipeline.steps.tasks import ShardTask
    from pipeline.steps.withdrawal import withdraw

    if resolution % factor:
        raise ValueError(f"--factor {factor} must divide the resolution {resolution}")
    kinds = ("reference", upsample, "nearest")
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
        outputs = tuple(posixpath.join(out, kind, name) for kind in kinds)
        body = partial(_write_versions, task.input_url, dict(zip(kinds, outputs)), resolution, factor, upsample, image_field)
        rows.append(run_to_completion(task, MANIFEST_SCHEMA, outputs, body, {
            "input_shard": task.input_url, "output_shard": outputs[0], "input_bytes": task.input_bytes,
            "input_version": task.input_version, "config_hash": settings}))
    save_checkpoint(plan.checkpoint.updated(task_rows(tasks, rows)))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise UserError(f"could not make the low-resolution inputs of {len(failed)} shard(s), e.g. "
                        f"{failed[0]['input_shard']}: {failed[0]['error']}")
    names = [posixpath.basename(ShardTask.for_shard(out, url).output_url) for url in inputs]
    return {kind: [posixpath.join(out, kind, name) for name in names] for kind in kinds}


def _write_versions(url: str, outputs: dict[str, str], resolution: int, factor: int, upsample: str,
                    image_field: str | None) -> dict:
    from pipeline.io.images import encode_image
    from pipeline.io.shards import AtomicShardWriter, ShardReader
    from pipeline.steps.transform_shard import chunked, decode_samples

    writers = {kind: AtomicShardWriter(path) for kind, path in outputs.items()}
    samples = 0
    with writers["reference"], writers[upsample], writers["nearest"]:
        seen: set[str] = set()
        for chunk in chunked(ShardReader(url), 64):
            decoded, _ = decode_samples(chunk, seen, image_field, resolution, 1)
            for sample, _, img in decoded:
                hr = Image.fromarray(img.pixels)
                # Area averaging is the super-resolution degradation's own downsampling.
                low = Image.fromarray(img.pixels.reshape(resolution // factor, factor, resolution // factor, factor, 3)
                                      .mean(axis=(1, 3)).round().astype(np.uint8))
                versions = {"reference": hr, upsample: low.resize(hr.size, UPSAMPLERS[upsample]),
                            "nearest": low.resize(hr.size, Image.Resampling.NEAREST)}
                for kind, image in versions.items():
                    writers[kind].write(sample.key, {"png": encode_image(np.asarray(image), "png")})
                samples += 1
    return {"status": "ok", "samples_in": samples, "samples_ok": samples, "samples_error": 0,
            "outputs_ok": samples, "outputs_error": 0}


def read_images(shards: list[str]) -> dict[str, np.ndarray]:
    from pipeline.io.shards import ShardReader

    return {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"])).convert("RGB"))
            for url in shards for s in ShardReader(url) if "png" in s.fields}


def compare(reference: dict[str, np.ndarray], methods: dict[str, dict[str, np.ndarray]], lpips=None,
            inception=None) -> tuple[list[dict], list[dict]]:
    """Per image and method, the fidelity to its reference (``metrics.fidelity.pair_fidelity``,
    the columns every job's rows use); per method, their summary by the evaluation's own rule
    (``fidelity_summary``: PSNR over finite values) and FID/KID against the references."""
    import pandas as pd

    from metrics.fidelity import pair_fidelity, to_unit_batch
    from pipeline.reports.summaries import fidelity_summary

    image_rows, summary = [], []
    ref_features = None
    if inception is not None:
        from metrics.inception import inception_features

        ref_features = inception_features(inception, list(reference.values()))
    for name, images in methods.items():
        keys = [k for k in reference if k in images]
        values = pair_fidelity(to_unit_batch([reference[k] for k in keys]), to_unit_batch([images[k] for k in keys]),
                               lpips=lpips)
        rows = [{"method": name, "key": k, "status": "ok", **{m: float(v[i]) for m, v in values.items()}}
                for i, k in enumerate(keys)]
        image_rows += rows
        row = {"method": name, "images": len(keys), **fidelity_summary(pd.DataFrame(rows))}
        if inception is not None:
            from metrics.fid import FeatureStats, fid_from_stats, kid
            from metrics.inception import inception_features

            feats = inception_features(inception, [images[k] for k in keys])
            row["fid"] = fid_from_stats(FeatureStats.of(feats), FeatureStats.of(ref_features))
            row["kid_mean"], row["kid_std"] = kid(feats, ref_features, subset_size=min(1000, len(keys)))
        summary.append(row)
    return summary, image_rows


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    ap = job_parser(__doc__)
    ap.add_argument("--input", nargs="+", required=True, help="high-resolution shards")
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", required=True, help="diffusion model for Boomerang")
    ap.add_argument("--sr-restorer", default=None, help="a cold super-resolution restorer (optional)")
    ap.add_argument("--factor", type=positive_int, default=4, help="downsampling factor (a power of 2)")
    ap.add_argument("--upsample", choices=sorted(UPSAMPLERS), default="bicubic")
    ap.add_argument("--t", type=float, default=0.1, help="Boomerang t for the one-pass method")
    ap.add_argument("--cascade", type=non_negative_int, default=3, help="passes of the cascaded method (0: skip it)")
    ap.add_argument("--cascade-t", type=float, default=0.05)
    ap.add_argument("--steps", type=positive_int, default=100)
    ap.add_argument("--resolution", type=positive_int, default=None, help="default: the diffusion model's")
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--address", default=None)
    ap.add_argument("--cpu-threads", type=positive_int, default=None)
    args = ap.parse_args(argv)

    from metrics.fidelity import load_lpips, why_lpips_unavailable
    from metrics.inception import load_fid_inception, why_fid_unavailable
    from pipeline.reports.html import render_comparison_report
    from pipeline.config.cli import exit_code, print_results
    from pipeline.config.job import JobConfig
    from pipeline.models.loading import load_model
    from pipeline.reports.contact_sheet import contact_sheet
    from pipeline.io.records import finished_files, write_bytes_atomic, write_parquet_atomic
    import pyarrow as pa
    from pipeline.execution.jobs import resolve_config, run_job
    from pipeline.io.shards import expand_shard_urls

    if args.factor < 2 or args.factor & (args.factor - 1):
        raise UserError(f"--factor must be a power of 2, got {args.factor}")
    resolution = args.resolution or load_model(args.model, device="cpu").resolution
    if args.sr_restorer:
        trained_at = load_model(args.sr_restorer, device="cpu").resolution
        if trained_at != resolution:
            raise UserError(f"--sr-restorer was trained at {trained_at} px but the comparison runs at {resolution} px: "
                             f"train it with --resolution {resolution}, or pass --resolution {trained_at}")
    made = low_resolution_shards(expand_shard_urls(args.input), posixpath.join(args.output, "enhance-inputs"),
                                 resolution, args.factor, args.upsample)
    runs = {}
    # keys="keep": the comparison matches outputs to references by key (nothing here is published).
    common = dict(job="anonymize", keys="keep", output=args.output, seed=args.seed, batch_size=args.batch_size, steps=args.steps,
                  resolution=resolution, address=args.address, cpu_threads=args.cpu_threads)
    jobs = {f"boomerang t={args.t:g}": JobConfig(inputs=tuple(made[args.upsample]), model=args.model, t=(args.t,), **common)}
    if args.cascade > 0:
        jobs[f"boomerang {args.cascade} x t={args.cascade_t:g}"] = JobConfig(
            inputs=tuple(made[args.upsample]), model=args.model, t=(args.cascade_t,), cascade=args.cascade, **common)
    if args.sr_restorer:
        jobs["cold super-resolution (TACoS)"] = JobConfig(
            inputs=tuple(made["nearest"]), model=args.sr_restorer, method="cold-superres",
            s=(int(math.log2(args.factor)),), **common)
    failed = []
    for name, cfg in jobs.items():
        if exit_code(run_job(cfg)):
            failed.append(name)
        runs[name] = resolve_config(cfg).run_dir
    reference = read_images(made["reference"])
    methods = {f"{args.upsample} upsampling": read_images(made[args.upsample])}
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
    lpips = load_lpips(allow_download=False) if lpips_reason is None else None
    inception = load_fid_inception() if fid_reason is None else None
    rows, image_rows = compare(reference, methods, lpips, inception)
    import pandas as pd

    summary = pd.DataFrame(rows)
    report_dir = posixpath.join(args.output, "enhance-report")
    write_parquet_atomic(pa.Table.from_pandas(pd.DataFrame(image_rows), preserve_index=False),
                         posixpath.join(report_dir, "rows.parquet"))
    keys = sorted(reference)[:6]
    strips = contact_sheet([("reference", [reference[k] for k in keys])] +
                           [(name[:14], [images[k] for k in keys if k in images]) for name, images in methods.items()])
    write_parquet_atomic(pa.Table.from_pandas(summary, preserve_index=False), posixpath.join(report_dir, "summary.parquet"))
    buf = io.BytesIO()
    strips.save(buf, format="PNG")
    write_bytes_atomic(buf.getvalue(), posixpath.join(report_dir, "strips.png"))
    page = render_comparison_report(f"Resolution enhancement x{args.factor} ({args.upsample})", summary, strips, notes,
                                    {"runs": runs, "factor": args.factor, "resolution": resolution})
    write_bytes_atomic(page.encode(), posixpath.join(report_dir, "report.html"))
    print_results(summary, notes, report_dir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
