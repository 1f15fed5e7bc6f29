"""Reading evaluated runs back and writing the comparison report. No Ray.

For each run directory and its ``eval-<hash8>/``: per-output metric rows (joined with the
job's rows by ``key``), per-t summaries (identity, fidelity, FID/KID reduced shard by shard)
and a few sources beside their outputs. Writes ``summary.parquet`` (one row per run and t),
``per_sample.parquet`` (every scored output of every run) and ``report.html``.
"""
from __future__ import annotations

import json
import posixpath

import fsspec
import numpy as np
import pandas as pd

from metrics.registry import MetricSettings
from pipeline.reports.faces import run_faces
from pipeline.reports.html import faces_section, key_columns, render_report, series_label
from pipeline.config.runs import load_run_config
from pipeline.transforms.scoring import read_npz
from pipeline.io.records import finished_files, write_parquet_atomic
from pipeline.io.images import find_image_field, prepare_image
from pipeline.reports.contact_sheet import contact_sheet
from pipeline.io.shards import ShardReader, expand_shard_urls

CONFIG_COLUMNS = ("job", "method", "model", "sampler", "steps", "cascade", "seed")


def _read_rows(url: str) -> pd.DataFrame:
    frames = []
    for file in finished_files(url, ".parquet"):
        with fsspec.open(file, "rb") as f:
            frames.append(pd.read_parquet(f))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _feature_files(eval_dir: str):
    return (read_npz(f) for f in finished_files(posixpath.join(eval_dir, "features"), ".npz"))


def summarize_run(run_dir: str, eval_name: str, reference: tuple | None = None, kid_max: int = 4000) -> tuple[list[dict], pd.DataFrame, dict]:
    """(summary rows, one per t; per-output rows with job columns; eval settings.json)."""
    cfg = load_run_config(run_dir)
    eval_dir = posixpath.join(run_dir, eval_name)
    fs, path = fsspec.core.url_to_fs(posixpath.join(eval_dir, "settings.json"))
    if not fs.exists(path):
        raise FileNotFoundError(f"{eval_dir}: not evaluated with these settings (run jobs/evaluate.py)")
    described = json.loads(fs.cat_file(path))
    metric_rows = _read_rows(posixpath.join(eval_dir, "rows"))
    job_rows = _read_rows(posixpath.join(run_dir, "rows"))
    per_sample = metric_rows.merge(job_rows[["key", "status", "error", "timestep", "precision"]].rename(
        columns={"status": "job_status", "error": "job_error"}), on="key", how="left") if len(metric_rows) else metric_rows
    config = run_columns(cfg)
    active = MetricSettings.build(**described["settings"]).active()
    by_t: dict[float, dict] = {}
    for metric, _ in active:
        if metric.keeps_features:
            for t, values in metric.summarize_features(_feature_files(eval_dir), reference, kid_max=kid_max).items():
                by_t.setdefault(t, {}).update(values)
    summary = []
    for t in output_levels(cfg, job_rows):
        jobs_t = job_rows[job_rows["t"] == t] if len(job_rows) else job_rows
        metrics_t = per_sample[per_sample["t"] == t] if len(per_sample) else per_sample
        row = {"run_dir": run_dir, **config, "t": t,
               "outputs_ok": int((jobs_t["status"] == "ok").sum()) if len(jobs_t) else 0,
               "outputs_error": int((jobs_t["status"] == "error").sum()) if len(jobs_t) else 0,
               "outputs_scored": int((metrics_t["status"] == "ok").sum()) if len(metrics_t) else 0}
        for metric, _ in active:
            if metric.keeps_features:
                row.update(by_t.get(t, {"fid": None, "fid_note": "no features"}))
                row["fid_convention"] = described.get("fid_convention")
            elif len(metrics_t):
                row.update(metric.summarize(metrics_t, described))
        summary.append(row)
    if len(per_sample):
        per_sample.insert(0, "run_dir", run_dir)
        per_sample["series"] = series_label(config)
    return summary, per_sample, described


def run_columns(cfg) -> dict:
    """The configuration columns of a run's summary rows; ``sampler`` is the method's own
    (the cold algorithm for cold methods)."""
    settings = cfg.flat()          # a method's own settings only: steps and cascade are Boomerang's
    return {**{c: settings.get(c) for c in CONFIG_COLUMNS}, "sampler": cfg.method_plugin.sampler_name(cfg.method_settings)}


def run_settings(cfg) -> dict:
    """What the report lists of a run: the settings hashed into its directory name (those that
    define its outputs, for its mode only) and how many inputs it read."""
    inputs = cfg.run.inputs
    return {**cfg.output_settings(), "inputs": f"{len(inputs)} " + ("folder(s)" if getattr(cfg.run, "input_kind", "") == "files"
                                                                      else "shard(s)")}


def output_levels(cfg, job_rows: pd.DataFrame | None = None) -> list[float]:
    """The rows' ``t`` values a run made outputs at: from its rows (a cold method's t is s / T
    of its restorer, which the configuration alone does not know), else its Boomerang t grid."""
    if job_rows is not None and len(job_rows) and job_rows["t"].notna().any():
        return sorted(float(t) for t in job_rows["t"].dropna().unique())
    return sorted(set(cfg.flat().get("t", ())))


def _decoded(sample, resolution: int | None = None, field: str | None = None) -> np.ndarray:
    return prepare_image(sample.fields[find_image_field(sample.fields, field)], resolution, 1).pixels


def _run_outputs(run_dir: str, source_keys: list[str]) -> dict[float, dict[str, np.ndarray]]:
    """Variant-0 outputs of ``source_keys`` per t, reading shards only until all are found.
    Which output came from which source is read from the job's rows: published anonymized
    outputs carry neither the source key nor the input order."""
    cfg = load_run_config(run_dir)
    job_rows = _read_rows(posixpath.join(run_dir, "rows"))
    found: dict[float, dict[str, np.ndarray]] = {t: {} for t in output_levels(cfg, job_rows)}
    wanted = set(source_keys)
    made_from = {} if not len(job_rows) else {
        r.key: (r.source_key, float(r.t)) for r in job_rows.itertuples()
        if r.status == "ok" and r.source_key in wanted and (r.variant or 0) == 0}
    for url in expand_shard_urls(posixpath.join(run_dir, "shards")):
        for sample in ShardReader(url):
            if sample.key in made_from:
                source_key, t = made_from[sample.key]
                if t in found:
                    found[t][source_key] = _decoded(sample)
        if all(len(v) == len(wanted) for v in found.values()):
            break
    return found


def sheet_rows(run_dirs: list[str], n: int = 8) -> list[tuple[str, list[np.ndarray]]]:
    """Contact-sheet rows: the first ``n`` sources of the first run (at the outputs'
    resolution), then each series' outputs of them by increasing t (variant 0), whatever the
    order the runs were given in (one run per t is the usual anonymize comparison)."""
    first = next((s for url in expand_shard_urls(posixpath.join(run_dirs[0], "shards")) for s in ShardReader(url)), None)
    if first is None:
        return []
    resolution = _decoded(first).shape[0]
    cfg = load_run_config(run_dirs[0])
    sources: dict[str, np.ndarray] = {}
    for url in cfg.run.inputs:
        for sample in ShardReader(url):
            if len(sources) < n:
                try:
                    sources[sample.key] = _decoded(sample, resolution, cfg.images.image_field)
                except Exception:   # a bad input has no output to show
                    continue
        if len(sources) >= n:
            break
    series = {r: series_label(run_columns(load_run_config(r))) for r in run_dirs}
    first_seen = {s: i for i, s in reversed(list(enumerate(series.values())))}
    made = []
    for run_dir in run_dirs:
        for t, images in _run_outputs(run_dir, list(sources)).items():
            label = f"t={t:g}" if len(first_seen) == 1 else f"{posixpath.basename(run_dir)[-6:]} t={t:g}"
            made.append((first_seen[series[run_dir]], t, label, [images.get(k, np.full_like(v, 255)) for k, v in sources.items()]))
    made.sort(key=lambda row: row[:2])          # stable: runs of one series and t keep their order
    return [("source", list(sources.values()))] + [(label, images) for _, _, label, images in made]


def write_report(run_dirs: list[str], eval_name: str, out_dir: str, reference: tuple | None = None,
                 title: str = "Evaluation report", attacks: pd.DataFrame | None = None,
                 notes: list[str] = ()) -> pd.DataFrame:
    """Summaries of every run into ``out_dir``: summary.parquet, per_sample.parquet, report.html.
    ``attacks``: attacker rows (``pipeline.reports.attacks``) with ``mode`` = the run directory;
    their rank-1 joins each run's summary rows and they get a section of the page. ``notes``:
    what was skipped and why (shown at the top of the page)."""
    import pyarrow as pa

    summaries, samples, described_all = [], [], {"recognizers": {}}
    for run_dir in run_dirs:
        rows, per_sample, described = summarize_run(run_dir, eval_name, reference)
        summaries += rows
        samples.append(per_sample)
        described_all["recognizers"].update(described.get("recognizers", {}))
        described_all = {**described, **described_all}
    summary = pd.DataFrame(summaries).sort_values(["model", "sampler", "steps", "cascade", "t"], kind="stable")
    if attacks is not None and len(attacks):
        from pipeline.reports.attacks import summary_columns

        summary = summary.merge(summary_columns(attacks), how="left", left_on="run_dir", right_index=True)
    per_sample = pd.concat([s for s in samples if len(s)], ignore_index=True) if any(len(s) for s in samples) else pd.DataFrame()
    write_parquet_atomic(pa.Table.from_pandas(summary, preserve_index=False), posixpath.join(out_dir, "summary.parquet"))
    if len(per_sample):
        write_parquet_atomic(pa.Table.from_pandas(per_sample, preserve_index=False), posixpath.join(out_dir, "per_sample.parquet"))
    configs = {r: run_settings(load_run_config(r)) for r in run_dirs}
    rows = sheet_rows(run_dirs)
    sections = []
    for r in run_dirs:
        cfg = load_run_config(r)
        if getattr(cfg, "regions", None) is not None and cfg.regions.region == "faces":   # interpolation runs have none
            face_rows, faces = run_faces(r, cfg)
            sections.append(faces_section(r, contact_sheet(face_rows) if face_rows else None, faces))
    if attacks is not None and len(attacks):
        from pipeline.reports.attacks import attacks_section, figure_section

        sections.append(attacks_section(attacks) + figure_section(attacks))
    metric_sections = [section for metric, _ in MetricSettings.build(**described_all["settings"]).active()
                       for section in metric.report(described_all)]
    summary.attrs["key_columns"] = key_columns(summary, metric_sections)     # what a reader compares first
    page = render_report(summary, per_sample, metric_sections, configs, contact_sheet(rows) if rows else None, title,
                         sections, notes)
    fs, path = fsspec.core.url_to_fs(posixpath.join(out_dir, "report.html"))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(page)
    return summary
