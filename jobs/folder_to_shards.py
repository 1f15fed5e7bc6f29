"""Turn a labelled image folder (one subfolder per person or class) into WebDataset shards.

    python jobs/folder_to_shards.py --data ../shared/datasets/orl_faces --out eval_out/orl \\
        --split test --train-photos 5

Each sample keeps its image bytes unchanged under their own extension (``pgm``, ``jpg``, ...),
plus ``cls`` (the class index) and ``json`` (class name, photo name, split); see
``pipeline.io.folders``.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.io.folders import write_folder_shards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with one subfolder of images per class")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=["all", "train", "test"], default="all")
    ap.add_argument("--train-photos", type=int, default=5, help="photos per class in the train split")
    ap.add_argument("--per-shard", type=int, default=100)
    args = ap.parse_args(argv)
    try:
        paths = write_folder_shards(args.data, args.out, args.split, args.train_photos, args.per_shard)
    except ValueError as exc:
        print(f"error: {exc}; a folder of photos without classes needs no conversion: give it to "
              f"jobs/anonymize_celeba.py as --input {args.data} (see README: My photos)", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
