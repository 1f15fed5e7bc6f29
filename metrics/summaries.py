"""Per-run summaries from per-output metric rows and per-shard Inception features: the math
each metric's ``summarize`` uses (``metrics.builtin``). Pure: callers pass DataFrames and an
iterator of feature arrays; nothing here reads files.

FID is reduced from float64 sufficient statistics merged shard by shard, so it never holds
every feature at once. KID needs raw features: it uses a uniform random subset of at most
``kid_max`` features per side, kept by streaming bottom-k sampling (``FeatureSample``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from metrics.fid import FeatureSample, FeatureStats, fid_from_stats, kid


@dataclass
class _Side:
    """One set of images (the sources, or the outputs at one t): exact statistics for FID
    and a bounded uniform sample of features for KID."""
    sample_capacity: int
    stats: FeatureStats | None = None
    sample: FeatureSample | None = None

    def add(self, features: np.ndarray, rng: np.random.Generator) -> None:
        if self.stats is None:
            self.stats = FeatureStats.empty(features.shape[1])
            self.sample = FeatureSample.empty(self.sample_capacity, features.shape[1])
        self.stats.add(features.astype(np.float64))
        self.sample = self.sample.add(features, rng)

    @property
    def count(self) -> int:
        return 0 if self.stats is None else self.stats.count


def distribution_metrics(shard_features: Iterable[dict[str, np.ndarray]], reference: tuple | None = None,
                         kid_max: int = 4000, kid_subset_size: int = 1000, kid_subsets: int = 100,
                         seed: int = 0) -> dict[float, dict]:
    """FID and KID of the outputs at each t against the sources (or against ``reference``,
    a (mu, sigma) pair such as a stored pytorch-fid ``.npz``; KID is then null, since
    mu/sigma hold no features). ``shard_features`` yields dicts with ``source``,
    ``output`` and ``output_t`` arrays (one per shard). Returns {t: metrics}."""
    rng = np.random.default_rng(seed)
    sources = _Side(kid_max)
    outputs: dict[float, _Side] = {}
    for arrays in shard_features:
        sources.add(arrays["source"], rng)
        for t in np.unique(arrays["output_t"]):
            outputs.setdefault(float(t), _Side(kid_max)).add(arrays["output"][arrays["output_t"] == t], rng)
    return {t: _one_side(side, sources, reference, kid_subset_size, kid_subsets, seed) for t, side in sorted(outputs.items())}


def _one_side(side: _Side, sources: _Side, reference, subset_size: int, subsets: int, seed: int) -> dict:
    n_ref = None if reference is not None else sources.count
    out = {"fid": None, "fid_note": None, "fid_n_outputs": side.count, "fid_n_reference": n_ref,
           "kid_mean": None, "kid_std": None, "kid_note": None}
    ref = reference if reference is not None else sources.stats
    if side.count < 2 or (reference is None and sources.count < 2):
        out["fid_note"] = out["kid_note"] = "fewer than 2 images on a side"
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["fid"] = float(fid_from_stats(side.stats, ref))
        except ValueError as exc:       # e.g. a complex square root: no made-up number
            out["fid_note"] = str(exc)
    if caught and out["fid"] is not None:
        out["fid_note"] = "; ".join(sorted({str(w.message) for w in caught}))[:500]
    if reference is not None:
        out["kid_note"] = "reference given as mu/sigma: KID needs reference features"
    else:
        mean, std = kid(side.sample.features, sources.sample.features,
                        num_subsets=subsets, subset_size=subset_size, seed=seed)
        out.update(kid_mean=float(mean), kid_std=float(std))
    return out


def identity_summary(rows: pd.DataFrame, prefix: str, threshold: float) -> dict:
    """Per-run figures of one recognizer over its columns ``<prefix>_*`` of ok rows."""
    ok = rows[rows["status"] == "ok"]
    both = ok[ok[f"{prefix}_face_in_source"].fillna(False).astype(bool) & ok[f"{prefix}_face_in_output"].fillna(False).astype(bool)]
    dist = both[f"{prefix}_l2"].astype(float)
    reid = both[f"{prefix}_reidentified"].astype(float)

    def stat(fn):
        return float(fn(dist)) if len(dist) else None

    return {
        f"{prefix}_threshold": threshold,
        f"{prefix}_source_face_rate": _mean(ok[f"{prefix}_face_in_source"]),
        f"{prefix}_output_face_rate": _mean(ok[f"{prefix}_face_in_output"]),
        f"{prefix}_pairs": len(both),
        f"{prefix}_reid_rate": float(reid.mean()) if len(both) else None,
        f"{prefix}_different_person_rate": float(1 - reid.mean()) if len(both) else None,
        f"{prefix}_l2_mean": stat(np.mean), f"{prefix}_l2_median": stat(np.median),
        f"{prefix}_l2_p10": stat(lambda d: np.quantile(d, 0.1)), f"{prefix}_l2_p90": stat(lambda d: np.quantile(d, 0.9)),
        f"{prefix}_cosine_mean": _mean(both[f"{prefix}_cosine"]),
    }


def fidelity_summary(rows: pd.DataFrame) -> dict:
    """Means over ok rows of the pixel metrics and LPIPS, where the rows have them."""
    return {**pixel_fidelity_summary(rows), **lpips_summary(rows)}


def pixel_fidelity_summary(rows: pd.DataFrame) -> dict:
    """PSNR over finite values (identical images have infinite PSNR, counted in
    ``psnr_identical``), SSIM and RMS distance: means over ok rows."""
    ok = rows[rows["status"] == "ok"]
    if "psnr" not in ok:
        return {}
    from metrics.fidelity import summarize_psnr      # (torch stays out of a driver that only reports)

    psnr_mean, psnr_identical = summarize_psnr(ok["psnr"].astype(float))
    return {"psnr_mean": psnr_mean, "psnr_identical": psnr_identical, "ssim_mean": _mean(ok["ssim"]),
            "rms_distance_mean": _mean(ok["rms_distance"])}


def lpips_summary(rows: pd.DataFrame) -> dict:
    ok = rows[rows["status"] == "ok"]
    return {"lpips_mean": _mean(ok["lpips"])} if "lpips" in ok else {}


def _mean(series: pd.Series) -> float | None:
    values = series.dropna().astype(float)
    return float(values.mean()) if len(values) else None
