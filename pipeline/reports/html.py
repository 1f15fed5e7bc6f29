"""A static HTML report a person opens in a browser: one self-contained file (plots and the
contact sheet are embedded as PNG data URIs). Pure rendering: callers pass the summary and
per-output tables, the contact sheet image and the runs' configurations.
"""
from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import pandas as pd

SERIES_FIELDS = ("job", "model", "sampler", "steps", "cascade")


def series_label(row: pd.Series | dict) -> str:
    """Runs that differ only in t form one line in the plots."""
    model = str(row["model"]).rstrip("/").rsplit("/", 1)[-1]
    method = "" if row.get("method", "boomerang") == "boomerang" else f" {row['method']}"
    return f"{row['job']}{method} {model} {row['sampler']}-{row['steps']} cascade {row['cascade']}"


def figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def y_limits(values, min_relative: float = 0.1, min_absolute: float = 1e-3) -> tuple[float, float] | None:
    """A y range for a line plot that shows a flat line as flat: at least ``min_relative`` of the
    largest magnitude (``min_absolute`` near zero) around the values, plus 5% either side, so a
    constant 1.0 or a change in the fourth digit is not stretched over the whole axis as
    matplotlib's autoscaling does (0.96 to 1.04). None when there is no finite value."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    need = max(min_relative * max(abs(lo), abs(hi)), min_absolute)
    if hi - lo < need:
        middle = (lo + hi) / 2
        lo, hi = middle - need / 2, middle + need / 2
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _lines(summary: pd.DataFrame, columns: list[tuple[str, str]], title: str, ylabel: str):
    """One axis per column; one line per series against t."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], columns):
        for name, group in summary.groupby(summary.apply(series_label, axis=1)):
            group = group.sort_values("t")
            values = pd.to_numeric(group[column], errors="coerce")
            ax.plot(group["t"], values, marker="o", label=name)
        limits = y_limits(pd.to_numeric(summary[column], errors="coerce").tolist())
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_xlabel("t (noise level t_B / T)")
        ax.set_ylabel(ylabel)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    return fig


def _histograms(per_sample: pd.DataFrame, column: str, threshold: float, label: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    values = pd.to_numeric(per_sample[column], errors="coerce")
    finite = values.dropna()
    bins = np.linspace(0, max(float(finite.max()) if len(finite) else 1.0, threshold) * 1.05, 40)
    for (series, t), group in per_sample.groupby(["series", "t"]):
        d = pd.to_numeric(group[column], errors="coerce").dropna()
        if len(d):
            ax.hist(d, bins=bins, histtype="step", linewidth=1.5,
                    label=f"t={t:g}" + ("" if per_sample["series"].nunique() == 1 else f" {series}"))
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(label)
    ax.set_ylabel("outputs")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{label} per t")
    return fig


def metric_section_html(section, summary: pd.DataFrame, per_sample: pd.DataFrame) -> str:
    """One metric's part of the report (``metrics.registry.ReportSection``): its plots against t
    and its histograms, for the columns the runs have."""
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.text:
        parts.append(f"<p>{html.escape(section.text)}</p>")
    for plot in section.line_plots:
        shown = [(c, label) for c, label in plot if c in summary]
        if shown:
            parts.append(f"<img src='{figure_uri(_lines(summary, shown, section.title, 'value'))}'>")
    for column, threshold, label in section.histograms:
        if column in per_sample:
            parts.append(f"<img src='{figure_uri(_histograms(per_sample, column, threshold, label))}'>")
    return "".join(parts)


def html_table(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "<td class=null>null</td>"
        if isinstance(v, float):
            return f"<td>{float_format.format(v)}</td>"
        return f"<td>{html.escape(str(v))}</td>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def faces_section(run_dir: str, sheet, faces: pd.DataFrame) -> str:
    """A --region faces run: sampled faces (source crop, mask, output crop) and per-face rows."""
    counts = faces.groupby(["action", "status"], dropna=False).size().reset_index(name="faces") if len(faces) else faces
    columns = [c for c in ("key", "face", "detector", "score", "size", "action", "t", "timestep", "status",
                           "rms_in_box") if c in faces]
    sampled = faces[faces["rms_in_box"].notna()][columns] if "rms_in_box" in faces else faces.iloc[:0]
    parts = [f"<h2>Faces: {html.escape(run_dir)}</h2>",
             "<p>Each row: the face's crop in the source, the blend mask (white: generated pixels; every pixel "
             "outside the crop is the source's), the crop in the output. rms_in_box: RMS difference inside the "
             "face box, in [0, 1] units.</p>"]
    if sheet is not None:
        parts.append(f"<img src='{image_uri(sheet)}'>")
    parts.append(html_table(counts) + html_table(sampled))
    return "".join(parts)


def render_report(summary: pd.DataFrame, per_sample: pd.DataFrame, metric_sections: list,
                  configs: dict[str, dict], contact_sheet, title: str, sections: list[str] = (),
                  notes: list[str] = ()) -> str:
    """The report's HTML. ``metric_sections``: each active metric's ``ReportSection``s;
    ``configs`` maps a run dir to its config; ``contact_sheet`` is a PIL image or None;
    ``sections``: more HTML parts (e.g. ``faces_section``) before the summary table; ``notes``:
    what was skipped and why, under the title."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.extend(f"<p class=null>note: {html.escape(n)}</p>" for n in notes)
    if contact_sheet is not None:
        parts.append("<h2>Sources and outputs</h2><p>Top row: sources at the model's resolution; then one row "
                     f"per run and t.</p><img src='{image_uri(contact_sheet)}'>")
    parts.extend(metric_section_html(section, summary, per_sample) for section in metric_sections)
    parts.extend(sections)
    parts.append(summary_tables(summary.drop(columns=[c for c in ("run_dir",) if c in summary]),
                                key_columns(summary, metric_sections)))
    parts.append("<h2>Runs</h2><p>The settings that define each run (those hashed into its directory name); "
                 "every setting, defaults included, is in the run's config.json.</p>")
    for run_dir, settings in configs.items():
        parts.append(f"<h3>{html.escape(run_dir)}</h3>" + html_table(pd.DataFrame(
            [(k, json.dumps(v, default=str) if isinstance(v, (list, dict, tuple)) else v) for k, v in sorted(settings.items())],
            columns=["setting", "value"])))
    return html_page(title, parts)


def key_columns(summary: pd.DataFrame, metric_sections) -> list[str]:
    """The summary's columns a reader compares first: the configuration columns that differ
    between its rows, t, the output counts and the columns the metric plots show."""
    varying = [c for c in ("job", "method", "model", "sampler", "steps", "cascade", "seed")
               if c in summary and summary[c].astype(str).nunique() > 1]
    plotted = [c for section in metric_sections for plot in section.line_plots for c, _ in plot]
    wanted = varying + ["t", "outputs_ok", "outputs_error", "outputs_scored"] + plotted
    return [c for c in dict.fromkeys(wanted) if c in summary]


def summary_tables(summary: pd.DataFrame, key: list[str]) -> str:
    """The summary's key columns as a table that fits a page, every column below it on demand."""
    if len(key) >= len(summary.columns):
        return "<h2>Summary</h2>" + html_table(summary)
    return ("<h2>Summary</h2>" + f"<p>Key columns; all {len(summary.columns)} are below and in summary.parquet.</p>"
            + html_table(summary[key]) + f"<details><summary>All {len(summary.columns)} columns</summary>"
            f"<div style='overflow-x:auto'>{html_table(summary)}</div></details>")


def html_page(title: str, parts: list[str]) -> str:
    """One self-contained HTML page from its body parts."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;font-size:12px;"
             "margin-bottom:1em} td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#eee} "
             ".null{color:#999} img{max-width:100%;margin:4px 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}"
            f"</style></head><body>{''.join(parts)}</body></html>")


def render_comparison_report(title: str, summary: pd.DataFrame, image, notes: list[str], settings: dict) -> str:
    """A one-table comparison page: the image (e.g. strips of each method), the table, notes
    on what was skipped, and the settings."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.extend(f"<p class=null>{html.escape(n)}</p>" for n in notes)
    if image is not None:
        parts.append(f"<img src='{image_uri(image)}'>")
    parts.append("<h2>Methods</h2>" + html_table(summary))
    parts.append("<h2>Settings</h2>" + html_table(pd.DataFrame(
        [(k, json.dumps(v, default=str)) for k, v in sorted(settings.items())], columns=["setting", "value"])))
    return html_page(title, parts)
