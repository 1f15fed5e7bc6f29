"""Face boxes and the square crops cut around them (pure arithmetic, no images).

A box is ``(x0, y0, x1, y1)`` in pixels of the full image, x1/y1 exclusive. Its crop is the
square of side ``(1 + 2 * margin) * max(box side)`` centred on it, moved inside the image
where it would cross a border and shrunk to the image's shorter side where it cannot fit;
everything outside the crop stays bit-identical to the source.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_FACES = 64               # per image: supplied or detected boxes beyond this are an error


@dataclass(frozen=True)
class FaceBox:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None
    detector: str = ""

    @property
    def size(self) -> float:
        """The box's shorter side, in pixels (what --min-face compares)."""
        return min(self.x1 - self.x0, self.y1 - self.y0)

    def clipped(self, width: int, height: int) -> "FaceBox | None":
        """The part inside the image, or None when nothing of it is."""
        x0, y0 = max(0.0, self.x0), max(0.0, self.y0)
        x1, y1 = min(float(width), self.x1), min(float(height), self.y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        return FaceBox(x0, y0, x1, y1, self.score, self.detector)


@dataclass(frozen=True)
class Crop:
    """A square window of the image: top-left corner and side, in whole pixels."""
    x: int
    y: int
    side: int

    def box_inside(self, box: FaceBox) -> tuple[float, float, float, float]:
        """``box`` in the crop's own pixel coordinates."""
        return box.x0 - self.x, box.y0 - self.y, box.x1 - self.x, box.y1 - self.y


def square_crop(box: FaceBox, margin: float, width: int, height: int) -> Crop:
    side = math.ceil(max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin))
    side = max(1, min(side, width, height))
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x = min(max(0, round(cx - side / 2)), width - side)
    y = min(max(0, round(cy - side / 2)), height - side)
    return Crop(int(x), int(y), int(side))


class BadBoxes(ValueError):
    """Supplied boxes that cannot be used (the sample becomes an error row)."""


def parse_boxes(value, detector: str = "supplied") -> list[FaceBox]:
    """Boxes from supplied data: a list of ``[x0, y0, x1, y1]`` or of objects with ``box`` (and
    optionally ``score``), or an object ``{"faces": [...]}``. JSON text or bytes are parsed
    first. Numbers must be finite with x1 > x0 and y1 > y0; at most ``MAX_FACES``."""
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadBoxes(f"face boxes are not JSON: {exc}") from None
    if isinstance(value, dict):
        value = value.get("faces")
    if not isinstance(value, list):
        raise BadBoxes("face boxes must be a list of [x0, y0, x1, y1] (or {\"faces\": [...]})")
    if len(value) > MAX_FACES:
        raise BadBoxes(f"{len(value)} face boxes; at most {MAX_FACES} per image")
    boxes = []
    for item in value:
        score = None
        if isinstance(item, dict):
            score, item = item.get("score"), item.get("box")
        if not (isinstance(item, (list, tuple)) and len(item) == 4):
            raise BadBoxes(f"a face box must be [x0, y0, x1, y1], got {str(item)[:60]}")
        try:
            x0, y0, x1, y1 = (float(v) for v in item)
            score = None if score is None else float(score)
        except (TypeError, ValueError):
            raise BadBoxes(f"face box values must be numbers, got {str(item)[:60]}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise BadBoxes(f"face box {[x0, y0, x1, y1]} is empty or not finite")
        boxes.append(FaceBox(x0, y0, x1, y1, score, detector))
    return boxes
