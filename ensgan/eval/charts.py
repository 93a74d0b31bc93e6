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
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ensgan.eval.table import CHARTED, METRICS, NOT_A_SAMPLE  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "ensgan", "font.size": 9}
FIGURES = CHARTED  # ensgan/eval/table.py: fidelity+diversity (FD, KID), diversity


def svg_of(fig: plt.Figure) -> str:
    """The figure as an `<svg>` element (no XML prolog or doctype, for inlining), with its
    metadata (a date) left out so the same data draws the same bytes."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def loss_chart(losses: Mapping[str, pd.DataFrame]) -> str:
    """Each member's generator and discriminator loss against the step."""
    with plt.rc_context(STYLE):
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
        return svg_of(fig)


SHARES = ("precision", "recall", "coverage")  # figures in [0, 1]
LOG_SPREAD = 20.0  # a panel whose largest value is this many times its smallest: log axis


def _scale(ax: plt.Axes, values: pd.Series, figure: str) -> str:
    """Fit the axis to the data, so close figures stay apart: a log axis for a positive figure
    spanning more than LOG_SPREAD (one blurred row's FD would squash every other bar), a
    zoomed axis for a share (recall 0.97 against 0.98 on a 0-1 axis looks equal), the data's
    span otherwise. Returns the note for the panel's title."""
    vals = values.dropna()
    if vals.empty:
        return ""
    lo, hi = float(vals.min()), float(vals.max())
    if lo > 0 and hi / lo > LOG_SPREAD:
        ax.set_xscale("log")
        return " (log scale)"
    pad = max((hi - lo) * 0.08, abs(hi) * 0.002, 1e-6)
    left, right = lo - pad, hi + pad
    if figure in SHARES:
        left, right = max(0.0, left), min(1.0, right)
    ax.set_xlim(left, right)
    return " (zoomed)" if figure in SHARES and (left > 0 or right < 1) else ""


def metrics_chart(table: pd.DataFrame) -> str:
    """FD, KID (with its standard deviation), recall and coverage of every model (members,
    combinations, real), one panel each: a dot per model on an axis fitted to the data
    (`_scale`), so no zero baseline is implied. A blend (NOT_A_SAMPLE: the pixel mean) is
    drawn apart: the axis is fitted without it, and where it falls outside, it is an arrow at
    the edge with its value.

    `table` has a `model` column and one column per figure (reports/plots/fd.csv)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(FIGURES), figsize=(9, 0.25 * len(table) + 1.2))
        colors = table["kind"].map({"member": "C0", "ensemble": "C1", "real": "C2"}).fillna("C7")
        apart = ((table["kind"] == "ensemble") & table["model"].isin(NOT_A_SAMPLE)).to_numpy()
        y = np.arange(len(table))
        for ax, figure in zip(axes, FIGURES, strict=True):
            values = table[figure].astype(float).to_numpy()
            spread = table.get(f"{figure}_std")  # kid: its standard deviation over subsets
            if spread is not None:
                err = spread.astype(float).to_numpy()
                ax.errorbar(values[~apart], y[~apart], xerr=err[~apart], fmt="none",
                            ecolor="0.4", elinewidth=1, capsize=2)  # fmt: skip
            ax.hlines(y, 0, 1, transform=ax.get_yaxis_transform(), color="0.92", linewidth=0.8)
            ax.scatter(values[~apart], y[~apart], c=list(colors[~apart]), s=28, zorder=3)
            note = _scale(ax, pd.Series(values[~apart]), figure)
            _draw_apart(ax, values[apart], y[apart])
            lower = METRICS[figure].lower_is_better
            ax.set_title(figure + (" (lower is better)" if lower else "") + note, fontsize=8)
            ax.set_yticks(list(y), list(table["model"]))
            ax.set_ylim(len(table) - 0.5, -0.5)
            ax.grid(axis="x", alpha=0.3)
        for ax in axes[1:]:
            ax.tick_params(labelleft=False)
        return svg_of(fig)


def _draw_apart(ax: plt.Axes, values: np.ndarray, y: np.ndarray) -> None:
    """Rows drawn apart: a dot where it fits the axis, else an arrow at the edge it is past,
    labelled with its value; the axis keeps its limits."""
    left, right = ax.get_xlim()
    for value, row in zip(values, y, strict=True):
        if not np.isfinite(value):
            continue
        if left <= value <= right:
            ax.scatter([value], [row], color="C1", s=28, zorder=3)
            continue
        edge, marker, ha = (right, ">", "right") if value > right else (left, "<", "left")
        ax.scatter([edge], [row], marker=marker, color="C1", s=40, zorder=4, clip_on=False)
        ax.annotate(f"{value:,.4g}", (edge, row), xytext=(-6 if ha == "right" else 6, 0),
                    textcoords="offset points", ha=ha, va="center", fontsize=7)  # fmt: skip
    ax.set_xlim(left, right)


def history_chart(history: pd.DataFrame, verdict: str | None = None) -> str:
    """FD, KID, recall and coverage per night, a line for the published combination and one per
    member (`promotion.history`'s frame); the nights held back by the gate are marked, and
    `verdict` (the last night's: promoted, or why not) is the chart's title."""
    missing = [f for f in FIGURES if f not in history.columns]  # nights from before a figure
    history = history.assign(**dict.fromkeys(missing, float("nan")))
    with plt.rc_context(STYLE):
        if history.dropna(subset=list(FIGURES), how="all").empty:
            fig, ax = plt.subplots(figsize=(9, 0.6))
            ax.axis("off")
            ax.text(0, 0.5, "no evaluated night in the store yet", va="center")
            _title(fig, verdict)
            return svg_of(fig)
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
            _night_axis(ax, history["at"])
        handles, labels = axes[-1].get_legend_handles_labels()
        axes[-1].legend(handles, labels, fontsize=7, loc="best")
        _title(fig, verdict)
        return svg_of(fig)


def _night_axis(ax: plt.Axes, at: pd.Series) -> None:
    """Dates a person reads: concise labels, and an axis that spans the nights (a day either
    side of a single night, where matplotlib's default spans years)."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    times = pd.to_datetime(at, utc=True).dropna()
    if not times.empty and times.min() == times.max():
        day = pd.Timedelta(days=1)
        ax.set_xlim(times.min() - day, times.max() + day)


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
