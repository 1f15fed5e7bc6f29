"""Anonymize a face dataset with Boomerang: one realistic neighbour per input image.

    ray job submit --working-dir . -- python jobs/anonymize_celeba.py \\
        --input 's3://bucket/celeba/celeba-{000000..000099}.tar' --output OUT \\
        --model google/ddpm-celebahq-256 --t 0.4

Writes, under OUT/anonymize-<config hash>/: shards/ (same names and keys as the inputs),
rows/ (per-sample Parquet), manifest/ + manifest.parquet (per shard), config.json.
Rerunning the same command processes only shards not finished yet.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.cli import common_parser, config_from_args, exit_code, user_errors_exit_2  # noqa: E402
from pipeline.execution.jobs import run_job  # noqa: E402


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = common_parser(__doc__, default_t=[0.4]).parse_args(argv)
    return exit_code(run_job(config_from_args("anonymize", args)))


if __name__ == "__main__":
    sys.exit(main())
