"""Decoding, normalising and encoding of sample images.

Only image bytes are ever decoded (by Pillow); every other field of a sample is carried as
opaque bytes. Conversion rules, recorded per sample in ``conversion``:

* RGB: used as is.
* L (grayscale), 1 (bilevel): replicated to three channels.
* I;16* (16-bit grayscale): divided by 257 to 8 bits, then replicated. I (32-bit integer):
  the same when its values exceed 255, unscaled otherwise; values outside 0..65535 are errors.
* LA, RGBA, PA, P with transparency: alpha-composited onto white.
* P (palette), CMYK, YCbCr, LAB, HSV: converted to RGB by Pillow.
* F (float) and anything else: an error row ("unsupported image mode").

Orientation: an EXIF (or XMP) Orientation tag other than 1 is applied right after decoding,
before anything looks at the pixels (phones store portraits sideways and set the tag; every
viewer shows them upright, so a face detector must see them upright too). The transposition
is recorded first in ``conversion`` (``exif-rotate-90`` for Orientation 6, ``exif-rotate-270``
for 8, ``exif-rotate-180``, ``exif-mirror``, ``exif-flip``, ``exif-transpose``,
``exif-transverse``), e.g. ``exif-rotate-90+gray-to-rgb``; EXIF that cannot be parsed is
``exif-unreadable`` and the image is taken as stored. Outputs are encoded from pixels, so they
carry no EXIF at all. ``orig_width``/``orig_height`` are the upright image's.

Geometry rule (``resize_rule``): an image whose size is already the model's resolution is
used as is ("none"); otherwise its shorter side is resized to the resolution with bicubic
filtering and the centre is cropped ("short-side-bicubic+center-crop"). Only the part that
survives the crop is ever resized, so memory is bounded by the output, not by the resized
whole (a 16 x 100000 strip at 256 would otherwise be a 256 x 1600000 intermediate). Images
whose shorter side is below ``min_side`` are error rows rather than blown-up blurs.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from pipeline.io.fields import IMAGE_FIELDS
from pipeline.errors import (IMAGE_TOO_LARGE, IMAGE_TOO_SMALL, NO_IMAGE, UNDECODABLE, UNSUPPORTED_MODE,
                             SampleError)

# Outputs keep the input's field (so loaders keep working) where that format holds RGB well.
_WRITE_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_INTEGER_GRAY_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32}
_PILLOW_CONVERTIBLE = {"P", "CMYK", "YCbCr", "LAB", "HSV"}

# Untrusted shards: images above this many pixels are error rows, checked from the header
# before any pixel is decoded (--max-pixels). Pillow's own guard only warns below twice its
# limit, so it is kept as a backstop at the same value and the check here is the rule.
DEFAULT_MAX_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


# EXIF Orientation -> (the transposition that makes the image upright, its name in ``conversion``).
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, "exif-mirror"),
    3: (Image.Transpose.ROTATE_180, "exif-rotate-180"),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, "exif-flip"),
    5: (Image.Transpose.TRANSPOSE, "exif-transpose"),
    6: (Image.Transpose.ROTATE_270, "exif-rotate-90"),        # stored rotated: turn 90 degrees clockwise
    7: (Image.Transpose.TRANSVERSE, "exif-transverse"),
    8: (Image.Transpose.ROTATE_90, "exif-rotate-270"),
}
EXIF_UNREADABLE = "exif-unreadable"

# fit_to_resolution resizes the whole image and crops when the resized whole is at most this
# many times the output (every photo up to a 16:1 panorama: the rule's exact historical pixels),
# else only the window that survives the crop (bounded memory for strips; see fit_to_resolution).
_WHOLE_RESIZE_MAX_FACTOR = 16


class BadImage(SampleError):
    """A sample whose image cannot be used; the message becomes the error row's reason."""


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray        # H x W x 3 uint8 at the model resolution
    orig_width: int
    orig_height: int
    orig_mode: str
    conversion: str
    resize_rule: str


def find_image_field(fields: dict[str, bytes], preferred: str | None = None) -> str:
    """The field holding the sample's image: ``preferred`` if given, else the first known one."""
    if preferred is not None:
        if preferred not in fields:
            raise BadImage(NO_IMAGE, f"missing image field '{preferred}' (fields: {sorted(fields)})")
        return preferred
    for name in IMAGE_FIELDS:
        if name in fields:
            return name
    raise BadImage(NO_IMAGE, f"no image field (looked for {', '.join(IMAGE_FIELDS)}; fields: {sorted(fields)})")


def to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    """Apply the documented mode-conversion rule; returns the RGB image and the rule used."""
    mode = img.mode
    if mode == "RGB":
        return img, "none"
    if mode in ("L", "1"):
        return img.convert("RGB"), "gray-to-rgb"
    if mode in _INTEGER_GRAY_MODES:
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if peak > 65535 or float(arr.min(initial=0)) < 0:
            raise BadImage(UNSUPPORTED_MODE, f"unsupported image mode '{mode}': values outside 0..65535")
        # 16-bit containers holding 8-bit data (common for 'I' from PNG) are left unscaled.
        divisor = 257.0 if (_INTEGER_GRAY_MODES[mode] == 16 or peak > 255) else 1.0
        gray = Image.fromarray(np.clip(np.round(arr / divisor), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB"), "16bit-gray-to-8bit-rgb" if divisor > 1 else "int-gray-to-rgb"
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), "alpha-over-white"
    if mode in _PILLOW_CONVERTIBLE:
        return img.convert("RGB"), f"{mode.lower()}-to-rgb"
    raise BadImage(UNSUPPORTED_MODE, f"unsupported image mode '{mode}'")


def fit_to_resolution(img: Image.Image, resolution: int) -> tuple[Image.Image, str]:
    """Resize the shorter side to ``resolution`` (bicubic) and centre-crop a square.

    Memory is bounded by the output: when the resized whole image would be more than
    ``_WHOLE_RESIZE_MAX_FACTOR`` outputs (a strip: 16 x 100000 at 256 is 256 x 1600000, 1.6 GB),
    only the crop's window is resized (Pillow's ``box``, in source coordinates; the filter still
    reads the source pixels around the window, as a whole resize would). Pillow holds ``box``
    in single precision and may pick the other pass order, so that path can differ from
    resize-then-crop by a grey level or so (more on synthetic noise, where bicubic overshoot is
    clipped between passes); every image within the factor takes the historical path, bit for
    bit."""
    w, h = img.size
    if (w, h) == (resolution, resolution):
        return img, "none"
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    rule = "short-side-bicubic+center-crop"
    if new_w * new_h <= _WHOLE_RESIZE_MAX_FACTOR * resolution * resolution:
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        return img.crop((left, top, left + resolution, top + resolution)), rule
    sx, sy = w / new_w, h / new_h
    window = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
    return img.resize((resolution, resolution), Image.Resampling.BICUBIC, box=window), rule


def upright(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Apply the image's EXIF (or XMP) Orientation: (the upright image, the transposition's name
    for ``conversion``, or None when it is stored upright). Orientation swaps width and height,
    never the pixel count, so the pixel cap checked on the header still holds. EXIF comes from
    strangers and Pillow's parser can fail on it in many ways (struct, value, key, type
    errors): then the image is taken as stored and ``exif-unreadable`` says so."""
    try:
        with warnings.catch_warnings():              # "Corrupt EXIF data": the tag is what counts
            warnings.simplefilter("ignore")
            orientation = img.getexif().get(ExifTags.Base.Orientation)
        found = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    except Exception:                     # noqa: BLE001 (hostile EXIF: any parser failure)
        return img, EXIF_UNREADABLE
    if found is None:
        return img, None
    method, name = found
    return img.transpose(method), name


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str | None]:
    """Untrusted bytes to a decoded, upright Pillow image and the orientation applied (see
    ``upright``), or BadImage: the pixel cap is checked on the header before any pixel is
    decoded. Every reader of input images goes through here (or ``open_upright``)."""
    Image.MAX_IMAGE_PIXELS = max(DEFAULT_MAX_PIXELS, max_pixels)    # the backstop never undercuts the rule
    try:
        with warnings.catch_warnings():              # the pixel cap below is the rule, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))      # reads the header only
        if img.width * img.height > max_pixels:
            raise BadImage(IMAGE_TOO_LARGE, f"image too large: {img.width}x{img.height} is over the "
                                            f"{max_pixels}-pixel limit (--max-pixels)")
        img.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(IMAGE_TOO_LARGE, f"image too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(UNDECODABLE, f"undecodable image: {type(exc).__name__}: {exc}") from None
    return upright(img)


def open_upright(fp) -> Image.Image:
    """A trusted image file (a path or file object: report inputs, experiment data sets, the
    job's own outputs) opened, decoded and turned upright by its EXIF Orientation."""
    img = Image.open(fp)
    img.load()
    return upright(img)[0]


def prepare_image(data: bytes, resolution: int | None, min_side: int,
                  max_pixels: int = DEFAULT_MAX_PIXELS, keep_size: bool = False) -> PreparedImage:
    """Decode untrusted bytes into an RGB array at the model resolution (None: the image's
    own shorter side, i.e. unchanged for square outputs; ``keep_size``: as it is, any shape),
    or raise BadImage."""
    img, orientation = decode_image(data, max_pixels)
    width, height, mode = img.width, img.height, img.mode
    if min(width, height) < min_side:
        raise BadImage(IMAGE_TOO_SMALL, f"image too small: {width}x{height} (shorter side must be >= {min_side})")
    rgb, conversion = to_rgb(img)
    if orientation is not None:
        conversion = orientation if conversion == "none" else f"{orientation}+{conversion}"
    if keep_size:
        return PreparedImage(np.asarray(rgb, dtype=np.uint8).copy(), width, height, mode, conversion, "none")
    fitted, resize_rule = fit_to_resolution(rgb, resolution or min(width, height))
    return PreparedImage(np.asarray(fitted, dtype=np.uint8).copy(), width, height, mode, conversion, resize_rule)


def to_model_range(pixels: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC arrays to a float32 NCHW batch in [-1, 1]."""
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """A float NCHW batch in [-1, 1] to uint8 NHWC arrays (clamped)."""
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def output_field(input_field: str) -> str:
    """Field name for the output image: the input's where it can hold RGB, else png."""
    return input_field if input_field in _WRITE_FORMATS else "png"


def encode_image(pixels: np.ndarray, field: str) -> bytes:
    """Encode an HWC uint8 array; deterministic bytes for equal pixels."""
    fmt = _WRITE_FORMATS[field]
    buf = io.BytesIO()
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels, mode="RGB").save(buf, format=fmt, **options)
    return buf.getvalue()
