"""The report's charts as inline SVG, drawn here (matplotlib), so the page works offline.

`dvc plots show` renders with Vega loaded from a CDN: on a machine without internet its page
is blank. These charts are self-contained `<svg>` elements (text kept as text, no external
font or script), put straight into the HTML.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pandas as pd  # noqa: E402

from ensgan.eval.table import CHARTED, METRICS  # noqa: E402

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "ensgan", "font.size": 9}
FIGURES = CHARTED  # ensgan/eval/table.py: fidelity+diversity (FD, KID), diversity


def _svg(fig: plt.Figure) -> str:
    """The figure as an `<svg>` element (no XML prolog or doctype, for inlining), with its
    metadata (a date) left out so the same data draws the same bytes."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def loss_chart(losses: Mapping[str, pd.DataFrame]) -> str:
    """Each member's generator and discriminator loss against the step."""
    with plt.rc_context(_STYLE):
        fig, (ax_g, ax_d) = plt.subplots(1, 2, figsize=(9, 3), sharex=True)
        for name, frame in losses.items():
            if frame.empty:
                continue
            ax_g.plot(frame["step"], frame["g_loss"], label=name, linewidth=1)
            ax_d.plot(frame["step"], frame["d_loss"], label=name, linewidth=1)
        for ax, title in ((ax_g, "generator loss"), (ax_d, "discriminator loss")):
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        ax_d.legend(fontsize=7, loc="best")
        return _svg(fig)


def metrics_chart(table: pd.DataFrame) -> str:
    """FD, KID (with its standard deviation), recall and coverage of every model (members,
    combinations, real), one panel each.

    `table` has a `model` column and one column per figure (reports/plots/fd.csv)."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(FIGURES), figsize=(9, 0.25 * len(table) + 1.2))
        colors = table["kind"].map({"member": "C0", "ensemble": "C1", "real": "C2"}).fillna("C7")
        for ax, figure in zip(axes, FIGURES, strict=True):
            spread = table.get(f"{figure}_std")  # kid: its standard deviation over subsets
            err = None if spread is None else spread.astype(float)
            ax.barh(table["model"], table[figure].astype(float), xerr=err, color=list(colors))
            lower = METRICS[figure].lower_is_better
            ax.set_title(figure + (" (lower is better)" if lower else ""))
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
        for ax in axes[1:]:
            ax.tick_params(labelleft=False)
        return _svg(fig)


def history_chart(history: pd.DataFrame, verdict: str | None = None) -> str:
    """FD, KID, recall and coverage per night, a line for the published combination and one per
    member (`promotion.history`'s frame); the nights held back by the gate are marked, and
    `verdict` (the last night's: promoted, or why not) is the chart's title."""
    missing = [f for f in FIGURES if f not in history.columns]  # nights from before a figure
    history = history.assign(**dict.fromkeys(missing, float("nan")))
    with plt.rc_context(_STYLE):
        if history.dropna(subset=list(FIGURES), how="all").empty:
            fig, ax = plt.subplots(figsize=(9, 0.6))
            ax.axis("off")
            ax.text(0, 0.5, "no evaluated night in the store yet", va="center")
            _title(fig, verdict)
            return _svg(fig)
        fig, axes = plt.subplots(1, len(FIGURES), figsize=(9, 2.8), sharex=True)
        for ax, figure in zip(axes, FIGURES, strict=True):
            for model, rows in history.groupby("model", sort=True):
                wide = model == "ensemble"
                ax.plot(rows["at"], rows[figure], marker="o", markersize=3, label=model,
                        linewidth=2.2 if wide else 0.9, color="C1" if wide else None)  # fmt: skip
            held = history[(history["model"] == "ensemble") & (history["decision"] == "candidate")]
            ax.scatter(held["at"], held[figure], marker="x", color="red", zorder=3,
                       label="not promoted")  # fmt: skip
            ax.set_title(figure)
            ax.grid(alpha=0.3)
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        handles, labels = axes[-1].get_legend_handles_labels()
        axes[-1].legend(handles, labels, fontsize=7, loc="best")
        _title(fig, verdict)
        return _svg(fig)


def _title(fig: plt.Figure, verdict: str | None) -> None:
    """The gate's verdict above the chart, wrapped: its reasons can be long."""
    if verdict:
        color = "red" if "not promoted" in verdict else None
        text = textwrap.fill(verdict, 120)
        fig.suptitle(text, fontsize=9, color=color, y=1.0, va="bottom", ha="center")


def external_refs(html: str) -> list[str]:
    """Every URL a page would fetch (src, href, url(...), @import): none, for an offline page."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", html)
    refs += re.findall(r"""@import\s+["']([^"']+)""", html)
    return [r for r in refs if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", r, re.I)]
