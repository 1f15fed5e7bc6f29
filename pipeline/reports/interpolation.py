"""The report of a pair-interpolation run: reads its rows, features and frames and writes
``<run_dir>/report/`` (summary.parquet, per_position.parquet, report.html)."""
from __future__ import annotations

import io
import json
import posixpath

import fsspec
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.reports.interpolation_tables import distribution_vs_inputs, render_interp_report, summarize_methods, summarize_positions
from pipeline.transforms.scoring import read_npz
from pipeline.transforms.frames import read_inversion
from pipeline.reports.contact_sheet import contact_sheet
from pipeline.io.records import finished_files, read_parquet_dir, write_bytes_atomic
from pipeline.io.schemas import FRAME_ROW_SCHEMA, INVERSION_ROW_SCHEMA
from pipeline.io.shards import ShardReader


def _config(run_dir: str) -> dict:
    with fsspec.open(posixpath.join(run_dir, "config.json"), "r") as f:
        return json.load(f)["config"]


def frame_strips(run_dir: str, rows: pd.DataFrame, methods: list[str], n_pairs: int, cell: int = 64):
    """Frame strips of the first ``n_pairs`` pairs whose frames are all ok: per pair and
    method, image A, the frames in order of lam, image B."""
    ok_pairs = rows.groupby("pair_id")["status"].agg(lambda s: (s == "ok").all())
    chosen = sorted(ok_pairs[ok_pairs].index)[:n_pairs]
    if not chosen:
        return None
    wanted = rows[rows["pair_id"].isin(chosen)]
    images = {}
    for shard in sorted(set(wanted["output_shard"])):
        for sample in ShardReader(shard):
            if sample.key in set(wanted["key"]):
                images[sample.key] = np.asarray(Image.open(io.BytesIO(sample.fields["png"])).convert("RGB"))
    inversions = read_parquet_dir(posixpath.join(run_dir, "inversions", "rows"), INVERSION_ROW_SCHEMA)
    cache = {r["key"]: r["cache_url"] for r in inversions if r["status"] == "ok"}
    strips = []
    for pair_id in chosen:
        pair = wanted[wanted["pair_id"] == pair_id]
        end_a, end_b = (read_inversion(cache[pair[c].iloc[0]])["pixels"].numpy() for c in ("key_a", "key_b"))
        for method in methods:
            keys = pair[pair["method"] == method].sort_values("lam")["key"]
            strips.append((f"{pair_id[-4:]} {method[:9]}", [end_a, *(images[k] for k in keys), end_b]))
    return contact_sheet(strips, cell=cell)


def _distribution(run_dir: str, rows: pd.DataFrame) -> dict:
    used = set(rows.loc[rows["status"] == "ok", "key_a"]) | set(rows.loc[rows["status"] == "ok", "key_b"])
    inputs = []
    for f in finished_files(posixpath.join(run_dir, "inversions", "features"), ".npz"):
        data = read_npz(f)
        inputs.append(data["features"][np.isin(data["keys"], list(used))])
    by_method: dict[str, list] = {}
    for f in finished_files(posixpath.join(run_dir, "features"), ".npz"):
        data = read_npz(f)
        for method in np.unique(data["methods"]):
            by_method.setdefault(str(method), []).append(data["features"][data["methods"] == method])
    if not inputs or not by_method:
        return {}
    return distribution_vs_inputs(np.concatenate(inputs).astype(np.float64),
                                  {m: np.concatenate(v).astype(np.float64) for m, v in by_method.items()})


def write_interp_report(run_dir: str, out_dir: str | None = None, n_pairs: int = 4, title: str | None = None) -> str:
    """Write the report files; returns the report directory."""
    out_dir = out_dir or posixpath.join(run_dir, "report")
    config = _config(run_dir)
    rows = pd.DataFrame(read_parquet_dir(posixpath.join(run_dir, "rows"), FRAME_ROW_SCHEMA))
    if rows.empty:
        raise ValueError(f"{run_dir}: no frame rows yet; run jobs/interpolate_pairs.py first")
    methods = list(config["methods"])
    summary = summarize_methods(rows, methods)
    notes = []
    if config.get("fid"):
        dist = _distribution(run_dir, rows)
        for column in ("fid", "kid_mean", "kid_std", "fid_note"):
            summary[column] = [dist.get(m, {}).get(column) for m in methods]
    else:
        notes.append("FID/KID not computed (run with --fid and the Inception weights in place)")
    inv = pd.DataFrame(read_parquet_dir(posixpath.join(run_dir, "inversions", "rows"), INVERSION_ROW_SCHEMA))
    inv_ok = inv[inv["status"] == "ok"]
    if len(inv_ok):
        notes.append(f"inverted latents: |l| / sqrt(d) mean {inv_ok['latent_norm_ratio'].mean():.3f}, share beyond "
                     f"+-{config['boundary']:g} {inv_ok['beyond_boundary_share'].mean():.4f} ({len(inv_ok)} images, "
                     f"{int(inv_ok['model_evals'].sum())} network evaluations in all)")
    per_lam = summarize_positions(rows)
    for name, frame in (("summary.parquet", summary), ("per_position.parquet", per_lam)):
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        write_bytes_atomic(buf.getvalue(), posixpath.join(out_dir, name))
    strips = frame_strips(run_dir, rows, methods, n_pairs)
    page = render_interp_report(summary, per_lam, strips, config, notes,
                                title or f"Interpolation: {', '.join(methods)} ({posixpath.basename(run_dir)})")
    write_bytes_atomic(page.encode(), posixpath.join(out_dir, "report.html"))
    if strips is not None:
        buf = io.BytesIO()
        strips.save(buf, format="PNG")
        write_bytes_atomic(buf.getvalue(), posixpath.join(out_dir, "strips.png"))
    return out_dir
