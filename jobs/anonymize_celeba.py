"""Anonymize a face dataset with Boomerang: one realistic neighbour per input image.

    # a folder of photos (any layout, jpg/png/webp/...) to a folder of anonymized photos
    python jobs/anonymize_celeba.py --input photos/ --output out --output-format files \\
        --model google/ddpm-celebahq-256 --t 0.5 --region faces
    # WebDataset shards on a cluster (README, "On a cluster with `ray job submit`"): an absolute
    # or URL --output, and --num-gpus 0 on a cluster without GPUs
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/anonymize_celeba.py --input 's3://bucket/celeba/celeba-{000000..000099}.tar' \\
        --output s3://bucket/celeba-anon --model google/ddpm-celebahq-256 --t 0.4
    # look first: before/after pictures of the first 4 images with their face boxes, no Ray
    python jobs/anonymize_celeba.py --input photos/ --output out --model ... --region faces --preview 4

Writes, under OUT/anonymize-<config hash>/: shards/ or files/ (what may be published: outputs
under pseudonyms, with no input field unless --keep-fields allows it), and the audit trail,
which links outputs to their sources and must stay private: rows/ (per sample; for image files
the source path and output file), manifest/ + manifest.parquet (per task), config.json.
Rerunning the same command (with the same --key-secret) processes only what changed.
"""
from __future__ import annotations

import sys


from pipeline.config.cli import exit_code, job_command_from_argv, positive_int, user_errors_exit_2  # noqa: E402
from pipeline.execution.drivers.anonymize import run_job  # noqa: E402


def add_preview_flag(ap) -> None:
    ap.add_argument("--preview", type=positive_int, metavar="N", default=None,
                    help="write before/after pictures of the first N input images (face boxes and detector scores "
                         "drawn) to OUTPUT/preview/ and stop: no Ray, no run directory")


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    cfg, args = job_command_from_argv("anonymize", argv, __doc__, add_preview_flag)
    if args.preview:
        import posixpath

        from pipeline.reports.preview import preview

        for name, result in preview(cfg, cfg.run.inputs, posixpath.join(cfg.run.output, "preview"), args.preview):
            print(f"{name}: {result}")
        return 0
    return exit_code(run_job(cfg))


if __name__ == "__main__":
    sys.exit(main())
