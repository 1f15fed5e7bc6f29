"""The key-named pixel cache files of multi-stage jobs (k-same's members and surrogate crops):
one safetensors tensor ``pixels`` (HWC uint8), written and read here only. Safetensors holds
plain tensors: reading one runs no code (never pickle)."""
from __future__ import annotations

import numpy as np


def pixel_cache_bytes(pixels: np.ndarray) -> bytes:
    """A cache file's bytes for ``pixels``."""
    import safetensors.torch
    import torch

    tensor = torch.from_numpy(np.array(pixels, order="C"))      # a C-ordered copy: a crop may view a read-only image
    return safetensors.torch.save({"pixels": tensor})


def read_cached_pixels(url: str) -> np.ndarray:
    """The pixels of a cache file (local path or object-store URL)."""
    import fsspec
    import safetensors.torch

    with fsspec.open(url, "rb") as f:
        return safetensors.torch.load(f.read())["pixels"].numpy()
