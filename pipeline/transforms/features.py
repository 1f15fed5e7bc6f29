"""Inception features of a task's images (for FID/KID), kept with their labels and written as one
``.npz`` of plain arrays (no pickles). No Ray, no files: the engine writes the bytes."""
from __future__ import annotations

import io

import numpy as np

FEATURE_DIM = 2048


class FeatureFile:
    """``add(images, **labels)`` per batch, ``files()`` at the end; does nothing without a network.
    ``label_types`` names each label array and its dtype (``keys=str``, ``lams=np.float64``)."""

    def __init__(self, inception, **label_types):
        self.inception, self.label_types = inception, label_types
        self.reset()

    def reset(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.labels: dict[str, list] = {name: [] for name in self.label_types}

    def add(self, images: list[np.ndarray], **labels) -> None:
        if self.inception is None or not images:
            return
        from metrics.inception import inception_features

        self.chunks.append(inception_features(self.inception, images).astype(np.float32))
        for name, values in labels.items():
            self.labels[name].extend(values)

    def files(self) -> dict[str, bytes]:
        if self.inception is None:
            return {}
        features = np.concatenate(self.chunks) if self.chunks else np.empty((0, FEATURE_DIM), np.float32)
        arrays = {name: np.array(values, dtype=self.label_types[name]) for name, values in self.labels.items()}
        buf = io.BytesIO()
        np.savez(buf, features=features, **arrays)
        return {"features": buf.getvalue()}
