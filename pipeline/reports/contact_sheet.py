"""A contact sheet of inputs beside their outputs, and a pixel-distance summary, from run dirs."""
from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image, ImageDraw

from pipeline.io.images import fit_to_resolution, open_upright
from pipeline.io.shards import ShardReader, expand_shard_urls


def first_images(shard_urls: list[str], field_names=("png", "jpg", "jpeg", "webp"), limit: int = 8) -> dict[str, np.ndarray]:
    """Up to ``limit`` decoded RGB images by key, in shard order."""
    out: dict[str, np.ndarray] = {}
    for url in shard_urls:
        for sample in ShardReader(url):
            field = next((f for f in field_names if f in sample.fields), None)
            if field is not None:
                out[sample.key] = np.asarray(open_upright(io.BytesIO(sample.fields[field])).convert("RGB"))
            if len(out) >= limit:
                return out
    return out


def run_images(run_dir: str, keys: list[str]) -> dict[str, np.ndarray]:
    """A run's outputs of ``keys`` (output keys) by key."""
    return {k: v for k, v in first_images(expand_shard_urls(posixpath.join(run_dir, "shards")), limit=10**9).items() if k in keys}


def outputs_by_source(run_dir: str, source_keys: list[str]) -> dict[str, np.ndarray]:
    """A run's first output of each source key, by source key: the job's rows say which
    output came from which source (anonymized outputs are named by pseudonyms)."""
    import pandas as pd

    from pipeline.io.records import read_parquet_dir
    from pipeline.io.schemas import ROW_SCHEMA

    rows = pd.DataFrame(read_parquet_dir(posixpath.join(run_dir, "rows"), ROW_SCHEMA))
    wanted = set(source_keys)
    made_from = {r.key: r.source_key for r in rows.itertuples() if r.status == "ok" and r.source_key in wanted
                 and not (r.variant or 0)} if len(rows) else {}
    images = run_images(run_dir, list(made_from))
    return {made_from[k]: v for k, v in images.items()}


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], cell: int = 64) -> Image.Image:
    """One labelled row per entry: ``(label, images)``; images are scaled to ``cell`` pixels."""
    label_w = 90
    width = label_w + cell * max(len(images) for _, images in rows)
    sheet = Image.new("RGB", (width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), label, fill="black")
        for c, img in enumerate(images):
            tile = fit_to_resolution(Image.fromarray(img), cell)[0] if img.shape[0] != cell else Image.fromarray(img)
            sheet.paste(tile.resize((cell, cell), Image.Resampling.NEAREST), (label_w + c * cell, r * cell))
    return sheet


def mean_pixel_distance(sources: dict[str, np.ndarray], outputs: dict[str, np.ndarray], resolution: int) -> float:
    """Mean RMS distance in [0, 1] units between each output and its source at model size."""
    dists = []
    for key, out in outputs.items():
        src = np.asarray(fit_to_resolution(Image.fromarray(sources[key]), resolution)[0], np.float64) / 255
        dists.append(np.sqrt(((src - out.astype(np.float64) / 255) ** 2).mean()))
    return float(np.mean(dists))
