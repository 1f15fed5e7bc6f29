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

import sys

from pipeline.config.cli import section_argv, user_errors_exit_2
from pipeline.execution.drivers.enhancement import EnhanceSettings, run_enhancement


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    return run_enhancement(section_argv(EnhanceSettings, argv, __doc__))


if __name__ == "__main__":
    sys.exit(main())
