"""Faces for the region tests: a real photo (matplotlib's Grace Hopper), scenes of noise with
supplied boxes, and a crowd of real faces tiled."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.files import png_bytes, write_tar


def scene(width=96, height=72, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def grace_hopper() -> np.ndarray:
    """A real photo of a person that matplotlib ships (the smoke case for the detectors)."""
    import matplotlib

    return np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB"))


def faces_shard(tmp_path) -> tuple[str, dict]:
    """Four scenes: two faces (one large, one below --min-face), one face, no box, unusable boxes."""
    boxes = {"two": [[10, 8, 34, 32], [60, 40, 68, 48]], "one": [[40, 20, 72, 52]], "none": [], "bad": "[[1, 2]"}
    members = []
    for i, (key, value) in enumerate(boxes.items()):
        members.append((f"{key}.png", png_bytes(scene(seed=i))))
        members.append((f"{key}.faces.json", value.encode() if isinstance(value, str) else json.dumps(value).encode()))
    return write_tar(tmp_path / "scenes-000000.tar", members), boxes


def crowd(rows: int = 9, cols: int = 9, tile=(40, 46)) -> tuple[np.ndarray, list[list[int]]]:
    """A crowd of real faces: the photo's face tiled rows x cols (81 by default), with each
    tile's face box."""
    face = Image.fromarray(grace_hopper()[60:340, 150:390]).resize(tile, Image.Resampling.BICUBIC)
    w, h = tile
    image = np.tile(np.asarray(face), (rows, cols, 1))
    boxes = [[c * w + 4, r * h + 4, c * w + w - 4, r * h + h - 4] for r in range(rows) for c in range(cols)]
    return image, boxes
