"""The page of ``make eval-privacy``: the privacy/utility frontier (each attacker's rank-1
against PSNR to the source and against face detection kept; fixed t as a line, the privacy
targets as stars, chance as a dashed line) and the tables. The table builders live in
``pipeline.reports.attacks`` (``jobs/evaluate.py`` uses them too)."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from pipeline.reports.attacks import attacks_section, frontier_figure, rank_table  # noqa: F401
from pipeline.reports.html import figure_uri, html_page, html_table


def write_report(path, table, settings: dict, timings: dict, notes: list[str]) -> None:
    parts = ["<h1>Privacy against attackers outside the loop</h1>",
             "<p>Lower rank-1 is more private. Every attacker was never in the loop; the untouched row is the "
             "sanity check (the attackers work). Chance: rank-1 = 1 / people, linkability AUC = 0.5. Detection "
             "kept: MTCNN on outputs upscaled to 160 px, as a share of the sources' rate.</p>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes if n]
    for x, label in (("psnr", "PSNR to the source (dB)"), ("face_detect_kept", "face detection kept (share of sources')"),
                     ("diversity_kept", "diversity kept (outputs' mean pairwise distance over the sources')"),
                     ("fid", "FID to the sources")):
        if x in table and table[x].notna().any():
            parts.append(f"<h2>Rank-1 against {html.escape(label)}</h2>"
                         f"<img src='{figure_uri(frontier_figure(table, x, label))}'>")
    parts.append(attacks_section(table, title="Tables"))
    parts.append("<h2>Timings (seconds)</h2>" + html_table(pd.DataFrame([{"mode": k, **v} for k, v in timings.items()])))
    parts.append(f"<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>")
    Path(path).write_text(html_page("Privacy against attackers outside the loop", parts))
