"""Tables and figures of attacker results (rows of ``metrics.attack_suite.run_attacks`` with a
``mode`` column and the mode's utility columns): shared by ``make eval-privacy``'s page and
``jobs/evaluate.py``'s report. No Ray, no files."""
from __future__ import annotations

import html

import pandas as pd

from pipeline.reports.html import figure_uri, html_table

UTILITY = ("published", "psnr", "ssim", "face_detect_output", "face_detect_source", "face_detect_kept", "fid", "kid",
           "t_mean", "target_met")


def rank_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per mode: each attacker's rank-1 (linkability: its AUC), then utility."""
    ranked = table[table.family != "linkability"]
    wide = ranked.pivot_table(index="mode", columns="attacker", values="rank1", aggfunc="first", sort=False)
    if (table.family == "linkability").any():
        link = table[table.family == "linkability"].pivot_table(index="mode", columns="attacker", values="auc",
                                                                aggfunc="first", sort=False)
        wide = wide.join(link.rename(columns=lambda c: c.replace("linkability/", "link AUC ")))
    use = table.groupby("mode", sort=False)[[c for c in UTILITY if c in table]].first()
    order = list(dict.fromkeys(table["mode"]))
    return wide.join(use).reindex(order)


def summary_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Per mode (index): ``attack_<attacker>_rank1`` / ``_rank5`` / ``_chance``, linkability ``_auc``."""
    cols = {}
    for r in table.itertuples():
        name = "attack_" + r.attacker.replace("/", "_")
        row = cols.setdefault(r.mode, {})
        if r.family == "linkability":
            row[f"{name}_auc"] = r.auc
        else:
            row.update({f"{name}_rank1": r.rank1, f"{name}_rank5": r.rank5, f"{name}_rank1_chance": r.rank1_chance})
    return pd.DataFrame.from_dict(cols, orient="index")


def chance_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per attacker: people, chance rank-1 / rank-5 (or AUC chance)."""
    cols = [c for c in ("attacker", "people", "rank1_chance", "rank5_chance", "auc_chance") if c in table]
    return table[cols].drop_duplicates("attacker").reset_index(drop=True)


def attacks_section(table: pd.DataFrame, title: str = "Attackers outside the loop") -> str:
    if table is None or not len(table):
        return ""
    rank5 = table[table.family != "linkability"].pivot_table(index="mode", columns="attacker", values="rank5",
                                                             aggfunc="first", sort=False)
    return "".join([
        f"<h2>{html.escape(title)}</h2>",
        "<p>Rank-1 identification per attacker (linkability: AUC) and the mode's utility. Families: naive "
        "(clear gallery), parrot (gallery anonymized by the same tool, another seed), seba (classifiers trained on "
        "the anonymized gallery), reversal (a restorer trained on anonymized -> clear gallery pairs, then the naive "
        "recognizers), linkability (outputs of one person nearer each other than to others).</p>",
        html_table(rank_table(table).reset_index()),
        "<h3>Rank-5</h3>", html_table(rank5.reset_index()),
        "<h3>Chance levels</h3>", html_table(chance_table(table)),
    ])


def frontier_figure(table: pd.DataFrame, x: str, xlabel: str):
    """One panel per attacker: rank-1 (AUC for linkability) against ``x``; fixed t as a line,
    other modes as stars, chance dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attackers = list(dict.fromkeys(table.attacker))
    others = [m for m in dict.fromkeys(table["mode"]) if not str(m).startswith("t=")]
    style = {m: ("*PsD^v"[i % 6], f"C{i + 1}") for i, m in enumerate(others)}     # the same in every panel
    cols = 4
    rows = (len(attackers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, attacker in zip(axes.flat, attackers):
        part = table[table.attacker == attacker]
        y = "auc" if attacker.startswith("linkability") else "rank1"
        fixed = part[part["mode"].str.startswith("t=")].sort_values(x)
        ax.plot(fixed[x], fixed[y], marker="o", label="fixed t")
        for r in fixed.itertuples():
            ax.annotate(r.mode, (getattr(r, x), getattr(r, y)), fontsize=7, xytext=(2, 2), textcoords="offset points")
        for r in part[~part["mode"].str.startswith("t=")].itertuples():
            marker, color = style[r.mode]
            ax.scatter([getattr(r, x)], [getattr(r, y)], marker=marker, color=color, s=110, zorder=3, label=r.mode)
        chance = part["auc_chance" if y == "auc" else "rank1_chance"].dropna()
        if len(chance):
            ax.axhline(chance.iloc[0], color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_ylim(0, 1.02)                         # one scale for every attacker
        ax.set_title(attacker, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("AUC" if y == "auc" else "rank-1", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attackers):]:
        ax.axis("off")
    handles: dict = {}
    for ax in axes.flat:                             # every mode once, whichever panel drew it
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def figure_section(table: pd.DataFrame) -> str:
    parts = []
    for x, label in (("psnr", "PSNR to the source (dB)"), ("face_detect_kept", "face detection kept")):
        if x in table and table[x].notna().any() and table["mode"].nunique() > 1:
            parts.append(f"<img src='{figure_uri(frontier_figure(table, x, label))}'>")
    return "".join(parts)
