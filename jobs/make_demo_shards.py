"""Write the embedded demo data set: synthetic faces as WebDataset shards (offline).

    python jobs/make_demo_shards.py --out demo_out/input --shards 4 --per-shard 16

Each sample has ``png`` (64x64 RGB), ``cls`` (identity) and ``json`` (identity, photo).
Identities are drawn with a seed different from the demo model's training set, so the demo
anonymizes people the model has never seen.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from pipeline.io.shards import AtomicShardWriter  # noqa: E402
from pipeline.io.synthetic_faces import make_faces  # noqa: E402


def write_demo_shards(out: str, shards: int, per_shard: int, photos: int = 2, seed: int = 777, size: int = 64) -> list[str]:
    total = shards * per_shard
    faces = make_faces(-(-total // photos), photos, seed=seed, size=size)
    paths = []
    for s in range(shards):
        path = f"{out}/faces-{s:06d}.tar"
        with AtomicShardWriter(path) as writer:
            for _ in range(per_shard):
                identity, photo, pixels = next(faces)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="PNG")
                writer.write(f"id{identity:05d}_p{photo}", {
                    "png": buf.getvalue(), "cls": str(identity).encode(),
                    "json": json.dumps({"identity": identity, "photo": photo}).encode()})
        paths.append(path)
    return paths


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
