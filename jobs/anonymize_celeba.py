"""Anonymize a face dataset with Boomerang: one realistic neighbour per input image.

    ray job submit --working-dir . -- python jobs/anonymize_celeba.py \\
        --input 's3://bucket/celeba/celeba-{000000..000099}.tar' --output OUT \\
        --model google/ddpm-celebahq-256 --t 0.4

Writes, under OUT/anonymize-<config hash>/: shards/ (what may be published: each input
shard's outputs under pseudonyms, in pseudonym order, with no input field unless
--keep-fields allows it), and the audit trail, which links outputs to their sources and must
stay private: rows/ (per sample), manifest/ + manifest.parquet (per shard), config.json.
Rerunning the same command (with the same --key-secret) processes only shards not finished yet.
"""
from __future__ import annotations

import sys


from pipeline.config.cli import exit_code, job_config_from_argv, user_errors_exit_2  # noqa: E402
from pipeline.execution.drivers.anonymize import run_job  # noqa: E402


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    return exit_code(run_job(job_config_from_argv("anonymize", argv, __doc__)))


if __name__ == "__main__":
    sys.exit(main())
