"""Comparing interpolation methods from their per-frame rows: the summary tables and the
HTML report (frame strips side by side, metric plots against the position lam). Pure
pandas/numpy and rendering: callers hand in the rows, features and strip images.

What the columns make checkable (methods.md section 2, the paper's claims):

* **artifacts**: the starting latent's ``latent_norm_ratio`` (|z| / sqrt(d); the model was
  trained on latents near 1 at high noise) and ``beyond_boundary_share``; in pixels, the
  share of saturated values; and FID/KID against the inputs when Inception weights exist;
* **keeping the endpoints**: ``rms_nearest`` (RMS distance to the nearer endpoint; LPIPS too
  when enabled), largest for a method that washes the inputs out;
* **smoothness**: the mean step between consecutive frames and ``step_max_over_mean``
  (1 for evenly spaced frames, large when one step jumps).
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from pipeline.reports.html import figure_uri, html_page, html_table, image_uri

MEAN_COLUMNS = ("rms_to_a", "rms_to_b", "rms_nearest", "rms_to_prev", "lpips_nearest", "lpips_to_prev",
                "latent_norm_ratio", "beyond_boundary_share", "saturated_share", "brightness")


def _with_nearest(frames: pd.DataFrame) -> pd.DataFrame:
    out = frames.copy()
    out["rms_nearest"] = np.fmin(out["rms_to_a"], out["rms_to_b"])
    if out["lpips_to_a"].notna().any():
        out["lpips_nearest"] = np.fmin(out["lpips_to_a"], out["lpips_to_b"])
    return out


def _step_unevenness(frames: pd.DataFrame, column: str) -> pd.Series:
    """Per method: the mean over pairs of max step / mean step between consecutive frames."""
    per_pair = frames.groupby(["method", "pair_id"])[column].agg(lambda s: s.max() / s.mean() if s.mean() > 0 else np.nan)
    return per_pair.groupby(level="method").mean()


def summarize_methods(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """One row per method: frame counts and the means of the per-frame metrics."""
    ok = _with_nearest(rows[rows["status"] == "ok"])
    out = []
    for method in methods:
        frames = ok[ok["method"] == method]
        row = {"method": method, "frames_ok": len(frames),
               "frames_error": int(((rows["method"] == method) & (rows["status"] != "ok")).sum()),
               "pairs": frames["pair_id"].nunique()}
        row.update({f"{c}_mean": float(frames[c].mean()) if c in frames and frames[c].notna().any() else None
                    for c in MEAN_COLUMNS})
        row["step_max_over_mean"] = float(_step_unevenness(frames, "rms_to_prev").get(method, np.nan)) if len(frames) else None
        row["model_evals_per_frame"] = float(frames["model_evals"].mean()) if len(frames) else None
        out.append(row)
    return pd.DataFrame(out)


def summarize_positions(rows: pd.DataFrame) -> pd.DataFrame:
    """Means of the per-frame metrics per (method, lam)."""
    ok = _with_nearest(rows[rows["status"] == "ok"])
    columns = [c for c in MEAN_COLUMNS if c in ok and ok[c].notna().any()]
    return ok.groupby(["method", "lam"])[columns].mean().reset_index()


def distribution_vs_inputs(inputs: np.ndarray, frames_by_method: dict[str, np.ndarray], kid_subset: int = 1000) -> dict:
    """FID and KID of each method's frames against the input images' Inception features."""
    from metrics.fid import FeatureStats, fid_from_stats, kid

    out = {}
    for method, feats in frames_by_method.items():
        if len(feats) < 2 or len(inputs) < 2:
            out[method] = {"fid": None, "kid_mean": None, "kid_std": None, "fid_note": "fewer than 2 features"}
            continue
        k_mean, k_std = kid(feats, inputs, subset_size=min(kid_subset, len(feats), len(inputs)))
        out[method] = {"fid": fid_from_stats(FeatureStats.of(feats), FeatureStats.of(inputs)), "kid_mean": k_mean,
                       "kid_std": k_std, "n_frames": len(feats), "n_inputs": len(inputs),
                       "fid_note": "N < 2048: FID biased upward, compare methods at equal N" if min(len(feats), len(inputs)) < 2048 else None}
    return out


def _position_plot(per_lam: pd.DataFrame, columns: list[tuple[str, str]]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(c, label) for c, label in columns if c in per_lam]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.0 * len(columns), 3.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], columns):
        for method, group in per_lam.groupby("method"):
            ax.plot(group["lam"], group[column], marker="o", label=method)
        ax.set_xlabel("lam (0 = image A, 1 = image B)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return fig


def render_interp_report(summary: pd.DataFrame, per_lam: pd.DataFrame, strips, config: dict, notes: list[str],
                         title: str) -> str:
    """The report's HTML; ``strips`` is a PIL image (frame strips, methods side by side) or None."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.extend(f"<p class=null>{html.escape(n)}</p>" for n in notes)
    if strips is not None:
        parts.append("<h2>Frames</h2><p>Per pair: one row per method, image A, the frames in order of lam, "
                     f"image B.</p><img src='{image_uri(strips)}'>")
    parts.append("<h2>Methods</h2>" + html_table(summary))
    parts.append(f"<img src='{figure_uri(_position_plot(per_lam, [('rms_nearest', 'RMS to the nearer endpoint'), ('rms_to_prev', 'RMS to the previous frame'), ('latent_norm_ratio', '|z| / sqrt(d) before clipping'), ('saturated_share', 'saturated pixel share')]))}'>")
    parts.append("<h2>Per position</h2>" + html_table(per_lam))
    parts.append("<h2>Configuration</h2>" + html_table(pd.DataFrame(
        [(k, str(v)) for k, v in sorted(config.items()) if k != "inputs"], columns=["setting", "value"])))
    return html_page(title, parts)
