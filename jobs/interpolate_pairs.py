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

import sys


from pipeline.config.cli import config_from_argv, exit_code, user_errors_exit_2  # noqa: E402
from pipeline.config.interpolation import InterpConfig  # noqa: E402


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    from pipeline.execution.drivers.interpolation import run_interpolation

    return exit_code(run_interpolation(config_from_argv(InterpConfig, argv, __doc__)))


if __name__ == "__main__":
    sys.exit(main())
