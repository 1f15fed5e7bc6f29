"""The inputs of the resolution-enhancement comparison (``jobs/enhance.py``): per image at the
comparison's resolution, the reference itself, its area-averaged downsample upsampled back with
the comparison's upsampler (the bicubic baseline and Boomerang's input) and with nearest (exactly
the cold super-resolution restorer's degradation at s = log2(factor)). No Ray, no files."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.io.limits import DEFAULT_MAX_PIXELS
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform

UPSAMPLERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class LowResolutionVersions(Transform):
    """Three published versions per image, one output shard each (sinks ``reference``, the
    upsampler's name and ``nearest``); no rows beyond the manifest."""
    row_schema = None
    chunk_size = 64

    def __init__(self, resolution: int, factor: int, upsample: str, image_field: str | None = None):
        if resolution % factor:
            raise ValueError(f"--factor {factor} must divide the resolution {resolution}")
        self.resolution, self.factor, self.upsample = resolution, factor, upsample
        self.decode = DecodeSpec(resolution, 1, DEFAULT_MAX_PIXELS, image_field)

    @property
    def kinds(self) -> tuple[str, str, str]:
        return ("reference", self.upsample, "nearest")

    def process(self, items: list[Decoded]) -> list[Produced]:
        out = []
        size, f = self.resolution, self.factor
        for i, (sample, _, image) in enumerate(items):
            hr = Image.fromarray(image.pixels)
            # Area averaging is the super-resolution degradation's own downsampling.
            low = Image.fromarray(image.pixels.reshape(size // f, f, size // f, f, 3).mean(axis=(1, 3))
                                  .round().astype(np.uint8))
            versions = {"reference": image.pixels, self.upsample: low.resize(hr.size, UPSAMPLERS[self.upsample]),
                        "nearest": low.resize(hr.size, Image.Resampling.NEAREST)}
            for kind, version in versions.items():
                out.append(Produced({"key": sample.key, "status": "ok"}, {"png": np.asarray(version)}, sink=kind, item=i))
        return out
