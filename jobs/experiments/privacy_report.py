"""The page of ``make eval-privacy``: the privacy-fidelity frontier (attacker success against
PSNR to the source, fixed t as a line, the target as a star) and the table."""
from __future__ import annotations

import html

import pandas as pd

from pipeline.reports.html import figure_uri, html_page, html_table


def frontier(table: pd.DataFrame, attack: str, label: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    fixed = table[table.run.str.startswith("t=")]
    ax.plot(fixed.psnr, fixed[attack], marker="o", label="fixed t")
    for row in fixed.itertuples():
        ax.annotate(row.run, (row.psnr, getattr(row, attack)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    target = table[table.run == "target"]
    ax.scatter(target.psnr, target[attack], marker="*", s=180, color="red", label="privacy target", zorder=3)
    chance = f"{attack}_chance" if f"{attack}_chance" in table else None
    if chance:
        ax.axhline(table[chance].iloc[0], color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("PSNR to the source (dB): fidelity")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_report(path, table: pd.DataFrame, recognizers, settings: dict) -> None:
    parts = ["<h1>Privacy target against fixed t</h1>",
             f"<p>{html.escape(str(settings))}</p>",
             "<p>Lower is more private: an attacker holding other photos of each person (the gallery) "
             "identifies the anonymized photos by the nearest gallery photo (rank-1), or with a classifier "
             "trained on the gallery alone. The untouched row is the sanity check (near perfect).</p>"]
    for name in recognizers:
        parts.append(f"<img src='{figure_uri(frontier(table, f'{name}_rank1', f'{name} rank-1 identification'))}'>")
    parts.append(f"<img src='{figure_uri(frontier(table, 'classifier_acc', 'gallery-trained classifier accuracy'))}'>")
    parts.append(html_table(table))
    path.write_text(html_page("Privacy target against fixed t", parts))
