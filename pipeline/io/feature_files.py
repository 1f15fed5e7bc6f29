"""Feature statistics and FID reference files, local or on any fsspec filesystem (the math and
the byte formats: ``metrics.fid``)."""
from __future__ import annotations

import fsspec
import numpy as np

from metrics.fid import FeatureStats, reference_from_npz_bytes, reference_npz_bytes
from pipeline.io.records import write_bytes_atomic


def save_feature_stats(stats: FeatureStats, url: str) -> None:
    write_bytes_atomic(stats.to_npz_bytes(), url)


def load_feature_stats(url: str) -> FeatureStats:
    with fsspec.open(url, "rb") as f:
        return FeatureStats.from_npz_bytes(f.read())


def save_reference_npz(url: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    write_bytes_atomic(reference_npz_bytes(mu, sigma), url)


def load_reference_npz(url: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a pytorch-fid statistics file (local path or fsspec URL)."""
    with fsspec.open(url, "rb") as f:
        return reference_from_npz_bytes(f.read())
