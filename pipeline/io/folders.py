"""Labelled image folders (one subfolder per person or class) as WebDataset shards.

Each sample keeps its image bytes unchanged under their own extension (``pgm``, ``jpg``, ...),
plus ``cls`` (the class index, subfolders in natural order) and ``json`` (class name, photo
name, split). Keys are ``<class>_<photo>`` with dots replaced, so they are valid WebDataset
keys. A split keeps the first ``train_photos`` photos of each class (natural order) as "train"
and the rest as "test": the split the augmentation experiment and the ORL evaluation use, so the
evaluated photos are never ones the face model was trained on.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.io.fields import IMAGE_FIELDS
from pipeline.io.shards import AtomicShardWriter


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


def split_images(data: str | Path, split: str = "all", train_photos: int = 5) -> list[dict]:
    """``labelled_images`` of one split ("train", "test" or "all")."""
    return [it for it in labelled_images(data, train_photos) if split == "all" or it["split"] == split]


def sample_key(item: dict) -> str:
    """A labelled image's shard key: ``<class>_<photo>``, dots replaced."""
    return f"{item['class']}_{item['photo']}".replace(".", "_")


def write_folder_shards(data: str | Path, out: str, split: str = "all", train_photos: int = 5,
                        per_shard: int = 100, prefix: str | None = None) -> list[str]:
    items = split_images(data, split, train_photos)
    prefix = prefix or f"{Path(data).name}-{split}"
    paths = []
    for start in range(0, len(items), per_shard):
        path = f"{out}/{prefix}-{start // per_shard:06d}.tar"
        with AtomicShardWriter(path) as writer:
            for it in items[start:start + per_shard]:
                writer.write(sample_key(it), {
                    it["path"].suffix.lower().lstrip("."): it["path"].read_bytes(),
                    "cls": str(it["label"]).encode(),
                    "json": json.dumps({k: it[k] for k in ("class", "photo", "split", "label")}).encode()})
        paths.append(path)
    return paths
