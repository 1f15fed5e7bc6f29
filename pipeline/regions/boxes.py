"""Face boxes and the square crops cut around them (pure arithmetic, no images).

A box is ``(x0, y0, x1, y1)`` in pixels of the full image, x1/y1 exclusive. Its crop is the
square of side ``(1 + 2 * margin) * max(box side)`` centred on it, moved inside the image
where it would cross a border and shrunk to the image's shorter side where it cannot fit;
everything outside the crop stays bit-identical to the source.

Supplied boxes come with the data, from strangers: they are parsed strictly (JSON numbers only,
finite, x1 > x0 and y1 > y0, a bounded field size and nesting) and checked against their image
(``check_boxes_fit``); anything else makes the sample a ``bad_boxes`` error row. There is no
cap on the number of faces here: ``--max-faces`` (``DEFAULT_MAX_FACES``) is applied to every
image whatever its boxes came from, and above it the image is an error row, never partly done.
"""
from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass

# Per image: more faces (supplied or detected) make the image a ``too_many_faces`` error row
# (--max-faces). Each regenerated face holds a crop, a mask and an output at the model's
# resolution until its image is composed; 512 of them at 256 px is about 100 MB of outputs.
DEFAULT_MAX_FACES = 512
# A supplied boxes field larger than this is refused before parsing (512 faces of
# [x0, y0, x1, y1] with scores are about 40 KB of JSON).
MAX_BOXES_BYTES = 1 << 20
# A supplied coordinate may lie outside its image by at most this many times the image's
# larger side (detectors' boxes cross borders a little; 1e300 is not a box of this image).
BOX_SLACK = 4

_SHORT = reprlib.Repr()             # error messages quote at most a little of what was given, however nested
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 5, 3, 30, 30


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
    optionally ``score``), or an object ``{"faces": [...]}``. JSON text or bytes (at most
    ``MAX_BOXES_BYTES``) are parsed first. Values must be JSON numbers (not strings, not
    booleans), finite, with x1 > x0 and y1 > y0; anything else is BadBoxes."""
    if isinstance(value, (bytes, str)):
        if len(value) > MAX_BOXES_BYTES:
            raise BadBoxes(f"face boxes field of {len(value)} bytes; at most {MAX_BOXES_BYTES}")
        try:
            value = json.loads(value)
        except RecursionError:          # "[[[[...": a nesting deeper than the parser's stack
            raise BadBoxes("face boxes are not usable JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadBoxes(f"face boxes are not JSON: {str(exc)[:100]}") from None
    if isinstance(value, dict):
        value = value.get("faces")
    if not isinstance(value, list):
        raise BadBoxes("face boxes must be a list of [x0, y0, x1, y1] (or {\"faces\": [...]})")
    boxes = []
    for item in value:
        score = None
        if isinstance(item, dict):
            score, item = item.get("score"), item.get("box")
        if not (isinstance(item, (list, tuple)) and len(item) == 4):
            raise BadBoxes(f"a face box must be [x0, y0, x1, y1], got {_SHORT.repr(item)}")
        x0, y0, x1, y1 = (_number(v, item) for v in item)
        score = None if score is None else _number(score, score)
        if x1 <= x0 or y1 <= y0:
            raise BadBoxes(f"face box {[x0, y0, x1, y1]} is empty (x1 must exceed x0 and y1 y0)")
        boxes.append(FaceBox(x0, y0, x1, y1, score, detector))
    return boxes


def _number(value, context) -> float:
    """A finite float from a JSON (or Parquet) number; strings, booleans and the rest refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadBoxes(f"face box values must be numbers, got {_SHORT.repr(context)}")
    try:
        number = float(value)
    except OverflowError:                # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise BadBoxes(f"face box values must be finite, got {_SHORT.repr(context)}")
    return number


def check_boxes_fit(boxes: list[FaceBox], width: int, height: int) -> None:
    """Supplied boxes against their (upright) image: BadBoxes when a box does not overlap the
    image by at least a pixel each way (boxes meant for another image, or another orientation
    of it) or reaches beyond its edges by more than ``BOX_SLACK`` times its larger side."""
    slack = BOX_SLACK * max(width, height)
    for box in boxes:
        coords = [box.x0, box.y0, box.x1, box.y1]
        if min(coords) < -slack or box.x1 > width + slack or box.y1 > height + slack:
            raise BadBoxes(f"face box {coords} reaches more than {BOX_SLACK} x {max(width, height)} pixels "
                           f"beyond the {width}x{height} image")
        if box.clipped(width, height) is None:
            raise BadBoxes(f"face box {coords} lies outside the {width}x{height} image")
