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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.cli import common_parser, config_from_args, exit_code, positive_int, user_errors_exit_2  # noqa: E402
from pipeline.execution.jobs import run_job  # noqa: E402


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    ap = common_parser(__doc__, default_t=[0.3])
    ap.add_argument("--variants", type=positive_int, default=4, help="neighbours per input and t")
    ap.add_argument("--mix-real-prob", type=float, default=0.5,
                    help="probability a training loader should use the real image rather than a neighbour")
    args = ap.parse_args(argv)
    return exit_code(run_job(config_from_args("augment", args, variants=args.variants,
                                              mix_real_prob=args.mix_real_prob)))


if __name__ == "__main__":
    sys.exit(main())
