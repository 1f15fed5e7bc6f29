"""Command-line flags shared by the jobs, turned into a JobConfig."""
from __future__ import annotations

import argparse
import logging

from pipeline.config import JobConfig


def common_parser(description: str, default_t: list[float]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True,
                    help="shards: brace patterns, lists, directories or fsspec URLs (s3://, gs://, file://)")
    ap.add_argument("--output", required=True, help="output root (local path or fsspec URL); runs go in subdirectories")
    ap.add_argument("--model", required=True, help="hub id (e.g. google/ddpm-celebahq-256) or a local model directory")
    ap.add_argument("--t", type=float, nargs="+", default=default_t, help="Boomerang noise level t_B / T, in (0, 1]")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps for a full (t = 1) reverse process")
    ap.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    ap.add_argument("--cascade", type=int, default=1, help="repeat the Boomerang round trip k times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="", help="text-conditioned models: the prompt (e.g. 'person')")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--guidance-scale", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=None, help="override the model's image size")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                    help="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    ap.add_argument("--min-side", type=int, default=16, help="inputs whose shorter side is smaller are error rows")
    ap.add_argument("--image-field", default=None, help="field holding the image (default: first of jpg, png, ...)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-gpus", type=int, default=None, help="GPU workers (default: every GPU of the cluster)")
    ap.add_argument("--num-cpu-workers", type=int, default=1, help="CPU workers when the cluster has no GPU")
    ap.add_argument("--cpu-threads", type=int, default=None, help="torch threads per CPU worker")
    ap.add_argument("--address", default=None, help="Ray cluster address; 'auto' joins a cluster started here with `ray start` "
                         "(default: RAY_ADDRESS, as set by `ray job submit`, else a private local cluster)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return ap


def config_from_args(job: str, args: argparse.Namespace, **extra) -> JobConfig:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return JobConfig(
        job=job, inputs=tuple(args.input), output=args.output, model=args.model, t=tuple(args.t),
        cascade=args.cascade, steps=args.steps, sampler=args.sampler, seed=args.seed, prompt=args.prompt,
        negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale, resolution=args.resolution,
        dtype=args.dtype, min_side=args.min_side, image_field=args.image_field, batch_size=args.batch_size,
        num_gpus=args.num_gpus, num_cpu_workers=args.num_cpu_workers, cpu_threads=args.cpu_threads,
        address=args.address, device=args.device, **extra)


def exit_code(manifest_rows: list[dict]) -> int:
    """Non-zero when a shard failed outright (a scheduler should alert); bad samples and
    truncated shards are recorded in the rows and manifest and do not fail the run."""
    return 1 if any(r["status"] == "failed" for r in manifest_rows) else 0
