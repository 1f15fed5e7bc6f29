"""Where region mode changed a scene and what an attacker cuts from it, measured against the true
boxes of a test scene (numpy + Pillow, no model): what ``eval_wild`` and ``eval_privacy --scenes``
score, below the execution layer so the attack driver can use them too."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.io.images import fit_to_resolution


def framed_crop(pixels: np.ndarray, box: tuple[int, int, int, int], resolution: int | None) -> np.ndarray:
    """The scene cut at ``box`` and framed as whole images are read (short side to
    ``resolution``, centre square; None: the centre square at full size)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = Image.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
    return np.asarray(fit_to_resolution(crop, resolution or min(crop.size))[0], dtype=np.uint8).copy()


def coverage(detected, true) -> float:
    """The share of the detected box inside the true one."""
    ix = max(0.0, min(detected[2], true[2]) - max(detected[0], true[0]))
    iy = max(0.0, min(detected[3], true[3]) - max(detected[1], true[1]))
    area = (detected[2] - detected[0]) * (detected[3] - detected[1])
    return ix * iy / area if area else 0.0


def changed_windows(shape: tuple[int, int], faces) -> np.ndarray:
    """Where region mode may change an image, from its faces side rows: each regenerated face's
    crop square, each mosaic face's box grown by a quarter (a superset of the mosaic)."""
    changed = np.zeros(shape, bool)
    for r in faces.itertuples():
        if r.action == "regenerated":
            x, y, s = int(r.crop_x), int(r.crop_y), int(r.crop_side)
            changed[y:y + s, x:x + s] = True
        else:
            gx, gy = (r.x1 - r.x0) * 0.25, (r.y1 - r.y0) * 0.25
            changed[max(0, int(r.y0 - gy)):int(r.y1 + gy) + 1, max(0, int(r.x0 - gx)):int(r.x1 + gx) + 1] = True
    return changed
