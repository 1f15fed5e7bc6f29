"""Procedural face images: the embedded, offline default data set of ``make demo``.

Each identity is a set of drawn features (face shape, skin tone, hair, eyes, brows, nose,
mouth, glasses); each photo of an identity varies pose, lighting and expression a little.
The images are simple, but they are faces with identities, which is what anonymization is
about, and they need no download or licence. Real data sets are a flag away (``--input``).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
HAIR = [(20, 16, 12), (70, 45, 25), (150, 100, 50), (220, 190, 120), (160, 60, 30), (200, 200, 200)]
IRIS = [(60, 40, 20), (40, 90, 160), (60, 120, 60), (90, 90, 90)]
BACKGROUND = [(70, 90, 140), (200, 200, 210), (120, 150, 110), (160, 110, 110), (230, 220, 190)]


def identity_params(rng: np.random.Generator) -> dict:
    """Draw the features that make one synthetic person."""
    return {
        "skin": SKIN[rng.integers(len(SKIN))],
        "hair": HAIR[rng.integers(len(HAIR))],
        "iris": IRIS[rng.integers(len(IRIS))],
        "background": BACKGROUND[rng.integers(len(BACKGROUND))],
        "face_w": rng.uniform(0.27, 0.36), "face_h": rng.uniform(0.36, 0.44),
        "hair_style": int(rng.integers(4)),  # 0 short, 1 long, 2 fringe, 3 bald
        "eye_dx": rng.uniform(0.09, 0.14), "eye_y": rng.uniform(-0.06, 0.0), "eye_r": rng.uniform(0.025, 0.045),
        "brow_tilt": rng.uniform(-0.03, 0.03), "nose_len": rng.uniform(0.06, 0.12),
        "mouth_w": rng.uniform(0.08, 0.15), "mouth_y": rng.uniform(0.15, 0.22), "smile": rng.uniform(-0.02, 0.05),
        "glasses": bool(rng.random() < 0.25),
    }


def render_face(p: dict, rng: np.random.Generator, size: int = 64, supersample: int = 4) -> np.ndarray:
    """Render one photo of identity ``p`` as an H x W x 3 uint8 array."""
    s = size * supersample
    img = Image.new("RGB", (s, s), p["background"])
    d = ImageDraw.Draw(img)
    cx, cy = s * (0.5 + rng.uniform(-0.04, 0.04)), s * (0.52 + rng.uniform(-0.03, 0.03))

    def box(x, y, rx, ry):
        return [cx + (x - rx) * s, cy + (y - ry) * s, cx + (x + rx) * s, cy + (y + ry) * s]

    fw, fh = p["face_w"], p["face_h"]
    if p["hair_style"] == 1:   # long hair falls behind the face
        d.rounded_rectangle(box(0, 0.08, fw + 0.06, fh + 0.06), radius=int(0.15 * s), fill=p["hair"])
    d.rectangle(box(0, fh * 0.9, 0.09, 0.15), fill=p["skin"])                      # neck
    d.ellipse(box(0, 0, fw, fh), fill=p["skin"])                                      # face
    if p["hair_style"] in (0, 1, 2):
        d.chord(box(0, -0.05, fw + 0.02, fh - 0.02), 180, 360, fill=p["hair"])
    if p["hair_style"] == 2:
        d.rectangle(box(-0.05, -fh * 0.55, fw * 0.7, 0.06), fill=p["hair"])
    expression = p["smile"] + rng.uniform(-0.015, 0.015)
    for side in (-1, 1):
        ex, ey, er = side * p["eye_dx"], p["eye_y"], p["eye_r"]
        d.ellipse(box(ex, ey, er * 1.6, er), fill=(250, 250, 250))
        d.ellipse(box(ex + rng.uniform(-0.005, 0.005), ey, er * 0.8, er * 0.8), fill=p["iris"])
        d.ellipse(box(ex, ey, er * 0.35, er * 0.35), fill=(10, 10, 10))
        by = ey - er - 0.03
        d.line([cx + (ex - 0.05) * s, cy + (by + side * p["brow_tilt"]) * s,
                cx + (ex + 0.05) * s, cy + (by - side * p["brow_tilt"]) * s], fill=p["hair"], width=int(0.02 * s))
        if p["glasses"]:
            d.ellipse(box(ex, ey, 0.06, 0.05), outline=(30, 30, 30), width=int(0.012 * s))
    shade = tuple(int(c * 0.8) for c in p["skin"])
    d.line([cx, cy + 0.0 * s, cx, cy + p["nose_len"] * s], fill=shade, width=int(0.02 * s))
    my, mw = p["mouth_y"], p["mouth_w"]
    d.arc(box(0, my - expression, mw, max(0.01, abs(expression) + 0.01)), 0 if expression >= 0 else 180,
          180 if expression >= 0 else 360, fill=(150, 40, 50), width=int(0.022 * s))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.1)   # lighting
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_faces(num_identities: int, photos_per_identity: int, seed: int, size: int = 64):
    """Yield ``(identity, photo_index, image)`` for a reproducible synthetic population."""
    rng = np.random.default_rng(seed)
    for identity in range(num_identities):
        params = identity_params(rng)
        for photo in range(photos_per_identity):
            yield identity, photo, render_face(params, rng, size)
