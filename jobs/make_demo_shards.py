"""Write the embedded demo data set: synthetic faces as WebDataset shards (offline).

    python jobs/make_demo_shards.py --out demo_out/input --shards 4 --per-shard 16

Each sample has ``png`` (64x64 RGB), ``cls`` (identity) and ``json`` (identity, photo).
Identities are drawn with a seed different from the demo model's training set, so the demo
anonymizes people the model has never seen.
"""
from __future__ import annotations

import argparse

from pipeline.fixtures.demo_shards import write_demo_shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=16)
    ap.add_argument("--seed", type=int, default=777)
    args = ap.parse_args()
    for path in write_demo_shards(args.out, args.shards, args.per_shard, seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()
