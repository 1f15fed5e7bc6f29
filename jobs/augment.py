"""Augment a labeled dataset with K Boomerang neighbours per image, at one or several t.

    python jobs/augment.py --input 'data/train-{0000..0009}.tar' --output OUT \\
        --model MODEL --t 0.2 0.4 --variants 4 --mix-real-prob 0.5

Each output sample is keyed ``<key>_t<t*1000>_v<k>`` and carries the input's other fields
(labels ``.cls``, metadata ``.json``) plus ``diffusion.json`` (source key, t, timestep,
variant, seed, and the real-or-augmented mixing probability for training loaders, which is
also in config.json and the rows).
"""
from __future__ import annotations

import sys


from pipeline.config.cli import exit_code, job_config_from_argv, user_errors_exit_2  # noqa: E402
from pipeline.execution.drivers.anonymize import run_job  # noqa: E402


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    return exit_code(run_job(job_config_from_argv("augment", argv, __doc__)))


if __name__ == "__main__":
    sys.exit(main())
