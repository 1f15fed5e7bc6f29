import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.files import png_bytes
from pipeline.io.images import BadImage, encode_image, find_image_field, prepare_image, to_model_range, to_uint8

REPO = Path(__file__).resolve().parents[1]


def _save(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_rgb_at_model_size_is_untouched():
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    got = prepare_image(png_bytes(arr), 16, 4)
    assert (got.pixels == arr).all()
    assert (got.conversion, got.resize_rule) == ("none", "none")


def test_resize_rule_short_side_then_center_crop():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255                      # the centre 20x20 is white, the sides black
    got = prepare_image(png_bytes(arr), 10, 4)
    assert got.pixels.shape == (10, 10, 3)
    assert got.resize_rule == "short-side-bicubic+center-crop"
    assert (got.orig_width, got.orig_height) == (40, 20)
    assert got.pixels[:, 1:-1].min() >= 250  # only the white centre survives the crop
    assert got.pixels.min() > 200            # (bicubic blends the outermost columns a little)


@pytest.mark.parametrize("make, conversion", [
    (lambda: Image.new("L", (8, 8), 100), "gray-to-rgb"),
    (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "cmyk-to-rgb"),
    (lambda: Image.new("P", (8, 8), 3), "p-to-rgb"),
])
def test_mode_conversions(make, conversion):
    got = prepare_image(_save(make(), "JPEG" if make().mode == "CMYK" else "PNG"), 8, 4)
    assert got.conversion == conversion and got.pixels.shape == (8, 8, 3)


def test_cmyk_red_stays_red():
    got = prepare_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), 8, 4)
    r, g, b = got.pixels[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))    # fully transparent red
    got = prepare_image(_save(img), 8, 4)
    assert got.conversion == "alpha-over-white"
    assert (got.pixels == 255).all()


def test_16bit_gray_is_scaled_to_8bit():
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[0, 0] = 257 * 10
    got = prepare_image(_save(Image.fromarray(arr)), 8, 4)
    assert got.conversion == "16bit-gray-to-8bit-rgb"
    assert got.pixels[1, 1, 0] == 255 and got.pixels[0, 0, 0] == 10


def test_float_mode_is_an_error():
    img = Image.fromarray(np.zeros((8, 8), np.float32), mode="F")
    with pytest.raises(BadImage, match="unsupported image mode"):
        prepare_image(_save(img, "TIFF"), 8, 4)


def test_undecodable_truncated_and_small_images_are_errors():
    good = png_bytes(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(BadImage, match="undecodable"):
        prepare_image(b"not an image", 8, 4)
    with pytest.raises(BadImage, match="undecodable"):
        prepare_image(good[: len(good) // 2], 8, 4)
    with pytest.raises(BadImage, match="too small"):
        prepare_image(png_bytes(np.zeros((3, 50, 3), np.uint8)), 8, 4)


def test_find_image_field():
    assert find_image_field({"json": b"", "jpeg": b"", "png": b""}) == "jpeg"
    with pytest.raises(BadImage, match="no image field"):
        find_image_field({"json": b"{}"})
    with pytest.raises(BadImage, match="missing image field 'webp'"):
        find_image_field({"png": b""}, "webp")


def test_model_range_round_trip_and_png_is_lossless():
    arr = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    back = to_uint8(to_model_range(list(arr)))
    assert (back == arr).all()
    decoded = np.asarray(Image.open(io.BytesIO(encode_image(arr[0], "png"))))
    assert (decoded == arr[0]).all()


# -- orientation and geometry ---------------------------------------------------------------

UPRIGHT = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)   # 30 wide, 20 tall
# EXIF Orientation -> how a camera stored the upright picture (the inverse of what the tag asks).
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}
NAMES = {2: "exif-mirror", 3: "exif-rotate-180", 4: "exif-flip", 5: "exif-transpose", 6: "exif-rotate-90",
         7: "exif-transverse", 8: "exif-rotate-270"}


def with_orientation(img: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied_on_decode(orientation):
    stored = Image.fromarray(UPRIGHT).transpose(STORED[orientation])
    data = with_orientation(stored, orientation)
    raw = np.asarray(Image.open(io.BytesIO(data)))
    assert not (raw.shape == UPRIGHT.shape and (raw == UPRIGHT).all())     # only the tag makes it upright
    got = prepare_image(data, None, 4, keep_size=True)
    assert (got.pixels == UPRIGHT).all() and got.conversion == NAMES[orientation]
    assert (got.orig_width, got.orig_height) == (30, 20)
    fitted = prepare_image(data, 8, 4)                                     # the model's square: from the upright image
    assert (fitted.pixels == prepare_image(png_bytes(UPRIGHT), 8, 4).pixels).all()
    gray = prepare_image(with_orientation(stored.convert("L"), orientation), None, 4, keep_size=True)
    assert gray.conversion == f"{NAMES[orientation]}+gray-to-rgb" and gray.pixels.shape == UPRIGHT.shape
    # Outputs are encoded from pixels: no EXIF, so no viewer turns them a second time.
    assert not Image.open(io.BytesIO(encode_image(got.pixels, "jpg"))).getexif()


def test_unusable_orientation_tags_leave_the_image_as_stored():
    for blob, conversion in ((b"garbage", "exif-unreadable"), (None, "none")):
        buf = io.BytesIO()
        Image.fromarray(UPRIGHT).save(buf, format="PNG", **({"exif": blob} if blob else {}))
        got = prepare_image(buf.getvalue(), None, 4, keep_size=True)
        assert (got.pixels == UPRIGHT).all() and got.conversion == conversion
    got = prepare_image(with_orientation(Image.fromarray(UPRIGHT), 9), None, 4, keep_size=True)   # not 1..8
    assert (got.pixels == UPRIGHT).all() and got.conversion == "none"


def _resize_then_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """The geometry rule as it was written first: resize the whole image, then crop."""
    w, h = img.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC).crop(
        (left, top, left + resolution, top + resolution)))


def test_fitting_keeps_its_pixels_for_photos_and_comes_close_for_strips():
    from pipeline.io.images import fit_to_resolution

    rng = np.random.default_rng(4)
    for w, h, resolution in ((40, 40, 32), (640, 480, 256), (300, 1000, 64), (23, 239, 16), (1000, 63, 64)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert (np.asarray(fit_to_resolution(img, resolution)[0]) == _resize_then_crop(img, resolution)).all()
    strip = Image.fromarray(np.repeat(np.linspace(0, 255, 2000, dtype=np.uint8)[:, None, None], 16, 1).repeat(3, 2))
    strip.paste((200, 30, 30), (4, 900, 12, 1100))
    diff = np.abs(np.asarray(fit_to_resolution(strip, 64)[0]).astype(int) - _resize_then_crop(strip, 64))
    assert diff.max() <= 2


PEAK_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from pipeline.io.images import prepare_image

buf = io.BytesIO()
Image.fromarray(np.zeros((100000, 16, 3), np.uint8)).save(buf, format="PNG")
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))
open("/proc/self/clear_refs", "w").write("5")      # the peak (VmHWM) starts again from here
before = kib("VmRSS")
pixels = prepare_image(buf.getvalue(), 256, 16).pixels
assert pixels.shape == (256, 256, 3)
print(len(buf.getvalue()), (kib("VmHWM") - before) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset")
def test_a_narrow_strip_costs_memory_of_the_output_not_of_the_resized_whole():
    """A 16 x 100000 PNG (tens of KB) at resolution 256: resizing it whole is a 256 x 1600000
    intermediate, +1.7 GiB of peak memory (measured 1752 MiB before the fix); only the window
    that survives the crop is resized now (6 MiB; 2-core CPU machine, 2026-12-06)."""
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    size, peak_mib = map(int, done.stdout.split())
    assert size < 200_000 and peak_mib < 100, (size, peak_mib)
