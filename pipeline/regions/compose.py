"""Cutting a face crop out at the model's resolution and blending the generated face back
(numpy + Pillow, no model). Outside the crop nothing is touched; inside, a feathered mask takes
the generated pixels in the face box and fades to the source over ``feather`` pixels, so where
the mask is 0 the source's pixels come back exactly."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.regions.boxes import Crop, FaceBox

PIXELATE_BLOCKS = 4        # the fallback for faces too small to regenerate: a 4 x 4 mosaic


def feather_mask(crop: Crop, box: FaceBox, feather: float) -> np.ndarray:
    """(side, side) float32: 1 inside the face box, falling linearly to 0 at ``feather``
    pixels outside it (distance to the box, per axis, pixel centres)."""
    x0, y0, x1, y1 = crop.box_inside(box)
    centres = np.arange(crop.side, dtype=np.float32) + 0.5
    dx = np.maximum(np.maximum(x0 - centres, centres - x1), 0)
    dy = np.maximum(np.maximum(y0 - centres, centres - y1), 0)
    distance = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    if feather <= 0:
        return (distance == 0).astype(np.float32)
    return np.clip(1 - distance / feather, 0, 1).astype(np.float32)


def cut(image: np.ndarray, crop: Crop, resolution: int) -> np.ndarray:
    """The crop's pixels at ``resolution`` x ``resolution`` (bicubic), uint8 HxWx3."""
    window = image[crop.y:crop.y + crop.side, crop.x:crop.x + crop.side]
    if crop.side == resolution:
        return np.ascontiguousarray(window)
    return np.asarray(Image.fromarray(window).resize((resolution, resolution), Image.Resampling.BICUBIC))


def mask_at(mask: np.ndarray, resolution: int) -> np.ndarray:
    """The crop's mask at the model's resolution (area average), float32 in [0, 1]."""
    if mask.shape[0] == resolution:
        return mask
    return np.asarray(Image.fromarray(mask, mode="F").resize((resolution, resolution), Image.Resampling.BOX),
                      dtype=np.float32).clip(0, 1)


def paste(image: np.ndarray, crop: Crop, generated: np.ndarray, mask: np.ndarray) -> None:
    """Blend ``generated`` (the model's output for the crop, any square size) into ``image``
    in place: ``mask * generated + (1 - mask) * source`` inside the crop, rounded to uint8."""
    if generated.shape[0] != crop.side:
        generated = np.asarray(Image.fromarray(generated).resize((crop.side, crop.side), Image.Resampling.BICUBIC))
    window = image[crop.y:crop.y + crop.side, crop.x:crop.x + crop.side]
    m = mask[:, :, None]
    blended = m * generated.astype(np.float32) + (1 - m) * window.astype(np.float32)
    window[...] = np.where(m > 0, np.round(blended), window).astype(np.uint8)


def pixelate(image: np.ndarray, box: FaceBox, grow: float = 0.25, blocks: int = PIXELATE_BLOCKS) -> tuple[int, int, int, int]:
    """Replace the box, grown by ``grow`` of its size on each side, with a ``blocks`` x ``blocks``
    mosaic of its own mean colours, in place; returns the pixel rectangle changed."""
    h, w = image.shape[:2]
    gx, gy = (box.x1 - box.x0) * grow, (box.y1 - box.y0) * grow
    x0, y0 = max(0, int(np.floor(box.x0 - gx))), max(0, int(np.floor(box.y0 - gy)))
    x1, y1 = min(w, int(np.ceil(box.x1 + gx))), min(h, int(np.ceil(box.y1 + gy)))
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    small = region.resize((min(blocks, x1 - x0), min(blocks, y1 - y0)), Image.Resampling.BOX)
    image[y0:y1, x0:x1] = np.asarray(small.resize(region.size, Image.Resampling.NEAREST))
    return x0, y0, x1, y1
