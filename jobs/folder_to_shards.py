"""Turn a labelled image folder (one subfolder per person or class) into WebDataset shards.

    python jobs/folder_to_shards.py --data ../shared/datasets/orl_faces --out eval_out/orl \\
        --split test --train-photos 5

Each sample keeps its image bytes unchanged under their own extension (``pgm``, ``jpg``, ...),
plus ``cls`` (the class index, subfolders in natural order) and ``json`` (class name, photo
name, split). Keys are ``<class>_<photo>`` with dots replaced, so they are valid WebDataset
keys. ``--split`` keeps the first ``--train-photos`` photos of each class (natural order) as
"train" and the rest as "test": the split the augmentation experiment and the ORL
evaluation use, so the evaluated photos are never ones the face model was trained on.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.io.images import IMAGE_FIELDS  # noqa: E402
from pipeline.io.shards import AtomicShardWriter  # noqa: E402


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def labelled_images(data: str | Path, train_photos: int) -> list[dict]:
    """Every image under ``data/<class>/``, in natural order, with its class index and split."""
    classes = sorted((d for d in Path(data).iterdir() if d.is_dir()), key=lambda d: natural_key(d.name))
    if not classes:
        raise ValueError(f"{data}: no class subfolders")
    items = []
    for index, folder in enumerate(classes):
        photos = sorted((p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_FIELDS),
                        key=lambda p: natural_key(p.name))
        for rank, photo in enumerate(photos):
            items.append({"path": photo, "label": index, "class": folder.name, "photo": photo.stem,
                          "split": "train" if rank < train_photos else "test"})
    return items


def write_folder_shards(data: str | Path, out: str, split: str = "all", train_photos: int = 5,
                        per_shard: int = 100, prefix: str | None = None) -> list[str]:
    items = [it for it in labelled_images(data, train_photos) if split == "all" or it["split"] == split]
    prefix = prefix or f"{Path(data).name}-{split}"
    paths = []
    for start in range(0, len(items), per_shard):
        path = f"{out}/{prefix}-{start // per_shard:06d}.tar"
        with AtomicShardWriter(path) as writer:
            for it in items[start:start + per_shard]:
                key = f"{it['class']}_{it['photo']}".replace(".", "_")
                writer.write(key, {
                    it["path"].suffix.lower().lstrip("."): it["path"].read_bytes(),
                    "cls": str(it["label"]).encode(),
                    "json": json.dumps({k: it[k] for k in ("class", "photo", "split", "label")}).encode()})
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with one subfolder of images per class")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=["all", "train", "test"], default="all")
    ap.add_argument("--train-photos", type=int, default=5, help="photos per class in the train split")
    ap.add_argument("--per-shard", type=int, default=100)
    args = ap.parse_args()
    for path in write_folder_shards(args.data, args.out, args.split, args.train_photos, args.per_shard):
        print(path)


if __name__ == "__main__":
    main()
