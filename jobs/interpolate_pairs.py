"""Interpolate pairs of images with NoiseDiffusion and its two baselines (methods.md section 2).

    ray job submit --working-dir . -- python jobs/interpolate_pairs.py \\
        --input 's3://bucket/cats/cats-{000000..000009}.tar' --output OUT \\
        --model stabilityai/stable-diffusion-2-1-base --prompt "a photo of a cat" \\
        --negative-prompt "blurry, low quality" --guidance-scale 7.5 \\
        --pairs pairs.csv --method slerp noise noisediffusion

Each image is DDIM-inverted once (140 of 200 steps by default, about t = 700) and every frame
of every method and pair it appears in decodes from that inversion. Frames are written as
WebDataset samples keyed <pair id>_<method>_l<lam x 1000> under OUT/interpolate-<hash>/shards/,
with one Parquet row per frame under rows/ (endpoint distances, smoothness, latent validity).
Rerunning the same command does only what is not finished.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.cli import (add_execution_flags, add_image_flags, add_io_flags, add_prompt_flags, exit_code,  # noqa: E402
                          job_parser, positive_int, user_errors_exit_2)
from pipeline.config.interpolation import DEFAULT_LAMS, InterpConfig  # noqa: E402
from pipeline.diffusion.interpolation import METHODS  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = job_parser(__doc__)
    add_io_flags(ap)
    ap.add_argument("--pairs", default="consecutive",
                    help="'consecutive' (keys 0-1, 2-3, ... within each shard), 'random' (seeded, see --num-pairs), "
                         "or a CSV/Parquet file with columns key_a,key_b (keys may be in different shards)")
    ap.add_argument("--num-pairs", type=positive_int, default=None, help="random pairs: how many (default: images / 2)")
    ap.add_argument("--method", nargs="+", default=["noisediffusion"], choices=METHODS,
                    help="slerp of the inversions, noise injection (SDEdit-style), NoiseDiffusion; several run together")
    ap.add_argument("--lam", type=float, nargs="+", default=list(DEFAULT_LAMS), help="positions between A (0) and B (1)")
    ap.add_argument("--steps", type=positive_int, default=200, help="DDIM grid of inversion and decoding")
    ap.add_argument("--invert-steps", type=positive_int, default=140, help="steps of the grid the inversion runs (t ~ 700 of 1000)")
    g = ap.add_argument_group("NoiseDiffusion")
    g.add_argument("--gamma", type=float, default=0.0, help="weight of fresh noise (more: fewer artifacts, less of A and B)")
    g.add_argument("--boundary", type=float, default=2.0, help="clip bound B before and after combining (paper: 2.0-2.4)")
    g.add_argument("--mu", type=float, default=None, help="weight of image A (default 1.2 alpha / (alpha + beta))")
    g.add_argument("--nu", type=float, default=None, help="weight of image B (default 1.2 beta / (alpha + beta))")
    ap.add_argument("--independent-noise", action="store_true", help="noise injection: independent noise for A and B")
    ap.add_argument("--seed", type=int, default=0)
    add_prompt_flags(ap, default_guidance=1.0)
    add_image_flags(ap)
    ap.add_argument("--pairs-per-shard", type=positive_int, default=16, help="pairs per output shard (one decoding task)")
    add_execution_flags(ap)
    m = ap.add_argument_group("metrics (RMS distances and latent validity are always recorded)")
    m.add_argument("--fid", action="store_true", help="keep Inception features of inputs and frames for FID/KID")
    m.add_argument("--lpips", action="store_true", help="LPIPS distances (needs the AlexNet weights in the torch cache)")
    m.add_argument("--inception-weights", default=None, help="path to pt_inception-2015-12-05-6726825d.pth")
    return ap


def config_from_args(args: argparse.Namespace) -> InterpConfig:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mode = args.pairs if args.pairs in ("consecutive", "random") else "file"
    return InterpConfig(
        inputs=tuple(args.input), output=args.output, model=args.model, pairs=mode,
        pairs_file=args.pairs if mode == "file" else None, num_pairs=args.num_pairs, methods=tuple(args.method),
        lam=tuple(args.lam), steps=args.steps, invert_steps=args.invert_steps, gamma=args.gamma,
        boundary=args.boundary, mu=args.mu, nu=args.nu, independent_noise=args.independent_noise,
        prompt=args.prompt, negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale, seed=args.seed,
        resolution=args.resolution, dtype=args.dtype, min_side=args.min_side, image_field=args.image_field,
        max_member_bytes=args.max_member_bytes, max_pixels=args.max_pixels,
        pairs_per_shard=args.pairs_per_shard, fid=args.fid, lpips=args.lpips, inception_weights=args.inception_weights,
        batch_size=args.batch_size, num_gpus=args.num_gpus, num_cpu_workers=args.num_cpu_workers,
        cpu_threads=args.cpu_threads, address=args.address, device=args.device, gpu_wait=args.gpu_wait,
        keep_orphans=args.keep_orphans)


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    from pipeline.execution.interpolation_job import run_interpolation

    args = parser().parse_args(argv)
    return exit_code(run_interpolation(config_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
