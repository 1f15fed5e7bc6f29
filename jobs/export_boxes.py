"""Export the face boxes a --region faces run used, in the format --boxes-file takes back.

    python jobs/export_boxes.py OUT/anonymize-<hash> boxes.parquet
    # look at them, fix them (add a missed face, drop a false one), then:
    python jobs/anonymize_celeba.py ... --region faces --detector supplied --boxes-file boxes.parquet

One row per face: key (the input's sample key), path (an image file's path relative to its
folder, for folder inputs), face, x0, y0, x1, y1 (pixels of the upright image), score, detector.
The file names your sources: keep it private, like the run's rows.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.config.submitted_job import refuse_relative_outputs
from pipeline.errors import UserError
from pipeline.regions.box_files import export_boxes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run directory of a --region faces run (OUT/anonymize-<hash>)")
    ap.add_argument("out", help="the Parquet file to write")
    args = ap.parse_args(argv)
    try:
        refuse_relative_outputs([], extra=(("out", args.out),))
        n = export_boxes(args.run_dir.rstrip("/"), args.out)
    except (FileNotFoundError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{n} face box(es) -> {args.out} (pass back with --detector supplied --boxes-file {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
