"""Labelled image shards for the augmentation experiment: synthetic identities written as
shards (png, cls, json) and labelled shards decoded back into arrays with the repository's own
decode and resize rules."""
from __future__ import annotations

import io
import json
import posixpath
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.errors import NO_IMAGE, TRUNCATED, UNDECODABLE
from pipeline.io.images import BadImage, find_image_field, prepare_image
from pipeline.io.shards import AtomicShardWriter, ShardReader
from pipeline.io.synthetic_faces import make_faces

SYNTHETIC_SEED = 4242   # the demo model was trained on seed 1234, the demo shards use 777


@dataclass
class Labelled:
    """Decoded images of one split, with labels and sample keys."""
    images: np.ndarray        # (N, R, R, 3) uint8
    labels: np.ndarray        # (N,) int64
    keys: list[str]
    skipped: int = 0          # samples without a usable image or label

def write_synthetic_shards(out: str, identities: int, photos: int, train_photos: int,
                           per_shard: int = 100) -> tuple[list[str], list[str]]:
    """Labelled synthetic faces as train and test shards (png, cls, json)."""
    if not 0 < train_photos < photos:
        raise ValueError(f"--train-photos must be in [1, --photos - 1], got {train_photos} of {photos}")
    splits: dict[str, list[tuple[str, dict]]] = {"train": [], "test": []}
    for identity, photo, pixels in make_faces(identities, photos, seed=SYNTHETIC_SEED, size=64):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        split = "train" if photo < train_photos else "test"
        splits[split].append((f"id{identity:05d}_p{photo}", {
            "png": buf.getvalue(), "cls": str(identity).encode(),
            "json": json.dumps({"identity": identity, "photo": photo, "split": split}).encode()}))
    return (write_samples(splits["train"], out, "synthetic-train", per_shard),
            write_samples(splits["test"], out, "synthetic-test", per_shard))


def write_samples(samples: list[tuple[str, dict]], out: str, prefix: str, per_shard: int) -> list[str]:
    paths = []
    for start in range(0, len(samples), per_shard):
        path = posixpath.join(out, f"{prefix}-{start // per_shard:06d}.tar")
        with AtomicShardWriter(path) as writer:
            for key, fields in samples[start:start + per_shard]:
                writer.write(key, fields)
        paths.append(path)
    return paths


def read_label(fields: dict[str, bytes]) -> int:
    if "cls" not in fields:
        raise BadImage(NO_IMAGE, "no cls field")
    try:
        return int(fields["cls"].decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise BadImage(UNDECODABLE, f"cls is not an integer: {fields['cls'][:20]!r}") from None


def load_labelled(urls: list[str], resolution: int) -> Labelled:
    """Decode every sample of ``urls`` at ``resolution`` (the repo's own decode and resize
    rules); samples without a usable image or integer ``cls`` are counted and skipped."""
    images, labels, keys, skipped = [], [], [], 0
    for url in urls:
        reader = ShardReader(url)
        for sample in reader:
            try:
                if sample.truncated:
                    raise BadImage(TRUNCATED, "truncated sample")
                label = read_label(sample.fields)
                pixels = prepare_image(sample.fields[find_image_field(sample.fields)], resolution, min_side=1).pixels
            except BadImage:
                skipped += 1
                continue
            images.append(pixels)
            labels.append(label)
            keys.append(sample.key)
        if reader.error:
            print(f"warning: {url}: {reader.error}", file=sys.stderr)
    if not images:
        raise ValueError(f"no usable labelled samples in {urls}")
    return Labelled(np.stack(images), np.asarray(labels, dtype=np.int64), keys, skipped)


def first_image_size(urls: list[str]) -> int:
    """The shorter side of the first decodable image: the model's output resolution."""
    for url in urls:
        for sample in ShardReader(url):
            try:
                img = Image.open(io.BytesIO(sample.fields[find_image_field(sample.fields)]))
                return min(img.size)
            except (BadImage, OSError):
                continue
    raise ValueError(f"no decodable image in {urls}")
