import io

import numpy as np
import pytest
from PIL import Image

from conftest import png_bytes
from pipeline.io.images import BadImage, encode_image, find_image_field, prepare_image, to_model_range, to_uint8


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
