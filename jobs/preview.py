"""Preview anonymization on a few photos, in this process (no Ray, nothing written but pictures).

    python jobs/preview.py photo.jpg [more.jpg folder/ ...] [--out preview] [--count 4] \\
        [--model google/ddpm-celebahq-256] [--region faces] [--t 0.5] [--face-threshold 0.8] ...

For each image, OUT/<n>-<name>.png shows it before and after, with the face boxes used and their
detector scores (green: regenerated, orange: below --min-face, a mosaic) and, in grey, the
detector's candidates below --face-threshold. Every flag of jobs/anonymize_celeba.py applies.
Without --model it uses the repository's demo model (assets/demo_model: a toy trained on
synthetic faces, for trying the tool offline, not for real outputs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config.cli import job_config_from_argv, positive_int, user_errors_exit_2
from pipeline.config.submitted_job import refuse_relative_outputs
from pipeline.reports.preview import preview

DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("images", nargs="*")
    ap.add_argument("--out", default="preview")
    ap.add_argument("--count", type=positive_int, default=4)
    ours, rest = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not ours.images or "-h" in rest or "--help" in rest:
        print(__doc__)
        if not ours.images and not ("-h" in rest or "--help" in rest):
            return 2
        job_config_from_argv("anonymize", ["--help"], __doc__)
    refuse_relative_outputs([], extra=(("out", ours.out),))      # its default is relative too
    if "--model" not in rest:
        print(f"model: {DEMO_MODEL} (the demo toy; pass --model for yours)", file=sys.stderr)
        rest += ["--model", str(DEMO_MODEL)]
    cfg = job_config_from_argv("anonymize", rest + ["--input", *ours.images, "--output", ours.out], __doc__)
    for name, result in preview(cfg, list(ours.images), ours.out, ours.count):
        print(f"{name}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
