"""What a sample's field names say about their bytes (no decoding, no torch)."""
from __future__ import annotations

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "tif", "tiff")


def is_image_field(name: str) -> bool:
    """An image by any of its name's parts: ``png``, ``thumb.jpg``, ``png.dup``. Such a field is
    never copied to an anonymized output: a second image would carry the original face."""
    return bool(set(name.lower().split(".")) & set(IMAGE_FIELDS))
