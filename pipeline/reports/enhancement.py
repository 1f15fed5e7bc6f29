"""The resolution-enhancement comparison's numbers and page: each method's images against the
high-resolution references (PSNR, SSIM, RMS distance, LPIPS and FID/KID where their weights
exist; the columns and PSNR rule of every evaluation), written to ``<output>/enhance-report/``."""
from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image


def read_images(shards: list[str]) -> dict[str, np.ndarray]:
    from pipeline.io.shards import ShardReader

    return {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"])).convert("RGB"))
            for url in shards for s in ShardReader(url) if "png" in s.fields}


def compare(reference: dict[str, np.ndarray], methods: dict[str, dict[str, np.ndarray]], lpips=None,
            inception=None) -> tuple[list[dict], list[dict]]:
    """Per image and method, the fidelity to its reference (``metrics.fidelity.pair_fidelity``,
    the columns every job's rows use); per method, their summary by the evaluation's own rule
    (``fidelity_summary``: PSNR over finite values) and FID/KID against the references."""
    import pandas as pd

    from metrics.fidelity import pair_fidelity, to_unit_batch
    from metrics.summaries import fidelity_summary

    image_rows, summary = [], []
    ref_features = None
    if inception is not None:
        from metrics.inception import inception_features

        ref_features = inception_features(inception, list(reference.values()))
    for name, images in methods.items():
        keys = [k for k in reference if k in images]
        values = pair_fidelity(to_unit_batch([reference[k] for k in keys]), to_unit_batch([images[k] for k in keys]),
                               lpips=lpips)
        rows = [{"method": name, "key": k, "status": "ok", **{m: float(v[i]) for m, v in values.items()}}
                for i, k in enumerate(keys)]
        image_rows += rows
        row = {"method": name, "images": len(keys), **fidelity_summary(pd.DataFrame(rows))}
        if inception is not None:
            from metrics.fid import FeatureStats, fid_from_stats, kid
            from metrics.inception import inception_features

            feats = inception_features(inception, [images[k] for k in keys])
            row["fid"] = fid_from_stats(FeatureStats.of(feats), FeatureStats.of(ref_features))
            row["kid_mean"], row["kid_std"] = kid(feats, ref_features, subset_size=min(1000, len(keys)))
        summary.append(row)
    return summary, image_rows


def write_enhancement_report(report_dir: str, reference: dict, methods: dict, notes: list[str], title: str,
                             settings: dict, lpips=None, inception=None):
    """rows.parquet (per image and method), summary.parquet (per method), strips.png and
    report.html under ``report_dir``; returns the summary table."""
    import pandas as pd
    import pyarrow as pa

    from pipeline.io.records import write_bytes_atomic, write_parquet_atomic
    from pipeline.reports.contact_sheet import contact_sheet
    from pipeline.reports.html import render_comparison_report

    rows, image_rows = compare(reference, methods, lpips, inception)
    summary = pd.DataFrame(rows)
    write_parquet_atomic(pa.Table.from_pandas(pd.DataFrame(image_rows), preserve_index=False),
                         posixpath.join(report_dir, "rows.parquet"))
    write_parquet_atomic(pa.Table.from_pandas(summary, preserve_index=False), posixpath.join(report_dir, "summary.parquet"))
    keys = sorted(reference)[:6]
    strips = contact_sheet([("reference", [reference[k] for k in keys])] +
                           [(name[:14], [images[k] for k in keys if k in images]) for name, images in methods.items()])
    buf = io.BytesIO()
    strips.save(buf, format="PNG")
    write_bytes_atomic(buf.getvalue(), posixpath.join(report_dir, "strips.png"))
    page = render_comparison_report(title, summary, strips, notes, settings)
    write_bytes_atomic(page.encode(), posixpath.join(report_dir, "report.html"))
    return summary
