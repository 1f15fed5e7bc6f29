"""FID and KID from Inception features, numerically as pytorch-fid computes them.

FID needs only each side's mean and covariance, so features are reduced to mergeable
sufficient statistics (``FeatureStats``: count, sum, sum of outer products). Workers reduce
their own images and the driver adds the partial statistics, which gives the ``np.mean`` and
``np.cov`` of all features (up to rounding) without ever gathering them.

KID needs raw features (its kernel compares samples pairwise), so memory grows with the
number of images; bound it with ``subsample_features`` (a uniform subset of several feature
arrays) or, when features arrive in pieces from several workers, ``FeatureSample`` (a
mergeable uniform sample of fixed capacity). A few thousand features per side is what KID
is usually reported with (subsets of 1000).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

@dataclass(eq=False)
class FeatureStats:
    """Sufficient statistics of a set of D-dim features, in float64.

    ``count`` rows seen, ``total`` their sum (D,), ``outer`` the sum of x x^T (D, D).
    Partial statistics of disjoint subsets add up to the statistics of their union.
    """

    count: int
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> FeatureStats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        """Statistics of one (N, D) feature array."""
        features = _as_2d(features)
        return cls.empty(features.shape[1]).add(features)

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    def add(self, features: np.ndarray) -> FeatureStats:
        """Accumulate an (N, D) batch in place; returns self for chaining."""
        x = _as_2d(features)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have dim {x.shape[1]}, statistics have {self.dim}")
        self.count += int(x.shape[0])
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both sets (a new object; neither input changes)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dim {self.dim} and {other.dim}")
        return FeatureStats(self.count + other.count, self.total + other.total, self.outer + other.outer)

    __add__ = merge

    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("mean of empty statistics")
        return self.total / self.count

    def covariance(self) -> np.ndarray:
        """Unbiased (N - 1) covariance, as ``np.cov(features, rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 features, have {self.count}")
        mu = self.mean()
        return (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, count=np.int64(self.count), total=self.total, outer=self.outer)
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> FeatureStats:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return cls(int(f["count"]), f["total"].astype(np.float64), f["outer"].astype(np.float64))


def _as_2d(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) features, got shape {x.shape}")
    return x


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), with pytorch-fid's safeguards.

    ``sqrtm`` of the (possibly near-singular) product; if it is not finite, retry with
    ``eps`` on both diagonals (with a warning); a complex result is accepted as its real part
    only when the imaginary part of its diagonal stays within 1e-3, else ValueError.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals", RuntimeWarning,
                      stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _mu_sigma(side: FeatureStats | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int | None]:
    if isinstance(side, FeatureStats):
        return side.mean(), side.covariance(), side.count
    mu, sigma = side
    return np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64), None


def fid_from_stats(a: FeatureStats | tuple[np.ndarray, np.ndarray],
                   b: FeatureStats | tuple[np.ndarray, np.ndarray]) -> float:
    """FID between two sides, each a ``FeatureStats`` or a ``(mu, sigma)`` pair.

    Warns when a side has fewer features than dimensions: its covariance is then rank
    deficient, FID is biased upward (strongly, at small N), and values are comparable only
    at equal N.
    """
    mu1, s1, n1 = _mu_sigma(a)
    mu2, s2, n2 = _mu_sigma(b)
    for n in (n1, n2):
        if n is not None and n < mu1.shape[0]:
            warnings.warn(f"FID from {n} features of dim {mu1.shape[0]}: rank-deficient covariance, the "
                          "value is biased; compare FIDs only at equal N", RuntimeWarning, stacklevel=2)
    return frechet_distance(mu1, s1, mu2, s2)


def reference_npz_bytes(mu: np.ndarray, sigma: np.ndarray) -> bytes:
    """Reference statistics in pytorch-fid's ``--save-stats`` format (keys ``mu``, ``sigma``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, mu=np.asarray(mu, dtype=np.float64), sigma=np.asarray(sigma, dtype=np.float64))
    return buf.getvalue()


def reference_from_npz_bytes(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from the bytes of a pytorch-fid statistics file."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape[0], x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased MMD^2 over random subsets.

    Each subset draws ``min(subset_size, n_a, n_b)`` rows without replacement from each
    side (the convention of Binkowski et al. and torch-fidelity). Unbiased, so it can be
    slightly negative when both sides come from one distribution.
    """
    a, b = _as_2d(features_a), _as_2d(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per side, have {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.array([_poly_mmd2(a[rng.choice(a.shape[0], m, replace=False)],
                                  b[rng.choice(b.shape[0], m, replace=False)]) for _ in range(num_subsets)])
    return float(values.mean()), float(values.std())


def subsample_features(arrays: Sequence[np.ndarray], max_total: int, seed: int = 0) -> np.ndarray:
    """A uniform random subset (without replacement) of at most ``max_total`` rows drawn
    across several (n_i, D) arrays, gathering only the chosen rows; row order is kept."""
    sizes = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    k = min(max_total, total)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    which = np.searchsorted(offsets, chosen, side="right") - 1
    parts = [np.asarray(arrays[i])[chosen[which == i] - offsets[i]] for i in np.unique(which)]
    if not parts:
        dim = np.asarray(arrays[0]).shape[1] if len(arrays) else 0
        return np.empty((0, dim))
    return np.concatenate(parts)


@dataclass(eq=False)
class FeatureSample:
    """A uniform random sample of at most ``capacity`` features from a stream, mergeable.

    Every row gets an independent uniform key and the sample keeps the rows with the
    smallest keys (bottom-k sampling), so a sample of the union of several workers' streams
    is the merge of their samples. Give each worker its own seed.
    """

    capacity: int
    keys: np.ndarray
    features: np.ndarray

    @classmethod
    def empty(cls, capacity: int, dim: int) -> FeatureSample:
        return cls(capacity, np.empty(0), np.empty((0, dim)))

    def _keep(self, keys: np.ndarray, features: np.ndarray) -> FeatureSample:
        if len(keys) > self.capacity:
            idx = np.argpartition(keys, self.capacity)[:self.capacity]
            keys, features = keys[idx], features[idx]
        return FeatureSample(self.capacity, keys, features)

    def add(self, features: np.ndarray, rng: np.random.Generator) -> FeatureSample:
        """A new sample including an (N, D) batch; ``rng`` draws the batch's keys."""
        x = _as_2d(features)
        return self._keep(np.concatenate([self.keys, rng.random(len(x))]), np.concatenate([self.features, x]))

    def merge(self, other: FeatureSample) -> FeatureSample:
        return self._keep(np.concatenate([self.keys, other.keys]),
                          np.concatenate([self.features, other.features]))
