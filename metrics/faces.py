"""What every face recognizer shares: the interface the metrics use, the input rule applied to
every image before recognition, and the upscaling of small images (see ``metrics.identity``)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

FACE_INSTALL_HINT = "install the optional face extra: pip install -r requirements-face.txt"
FACE_BOXES = ("detect", "full")


@runtime_checkable
class FaceRecognizer(Protocol):
    """What the metrics need from a recognizer.

    ``name`` prefixes metric columns; ``threshold`` is the same-person cut on ``l2`` (the L2
    distance on normalized embeddings when ``l2_normalized``, else on the raw ones);
    ``embed`` returns one vector per image, or None where no face was found.
    """

    name: str
    threshold: float
    distance_rule: str
    l2_normalized: bool

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]: ...


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB copy of ``array`` by the module's input rule (see its docstring)."""
    a = np.asarray(array)
    if a.dtype == np.uint16:
        a = np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {a.dtype}: pass uint8, uint16 or bool arrays")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}: expected HxW, HxWx1, HxWx2, HxWx3 or HxWx4")
    if a.shape[2] in (2, 4):                       # alpha over white
        color, alpha = a[:, :, :-1].astype(np.float64), a[:, :, -1:].astype(np.float64) / 255.0
        a = np.round(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def upscale_to_min_side(image: np.ndarray, min_side: int) -> np.ndarray:
    """Bicubic upscale (PIL) so the shorter side is >= ``min_side``; never downscales."""
    h, w = image.shape[:2]
    if min(h, w) >= min_side:
        return image
    scale = min_side / min(h, w)
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def check_face_box(face_box: str) -> str:
    if face_box not in FACE_BOXES:
        raise ValueError(f"face_box must be one of {FACE_BOXES}, got {face_box!r}")
    return face_box
