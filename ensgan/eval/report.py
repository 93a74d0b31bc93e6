"""What humans look at: a one-page HTML report and a plain-text metrics table.

`metrics` is shaped `{"members": {name: {metric: value}}, "ensemble": {method: {...}},
"real": {...}}`; a section whose values are all mappings gives one row per key, any other
section (e.g. `"real": {"fd": 1.2}`) gives one row named after the section. Every metric
found anywhere becomes a column, so new measures show up without touching this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup
from tabulate import tabulate

from ensgan.eval.table import METRICS, NOT_A_SAMPLE, NOTES
from ensgan.io.files import atomic_write

MISSING = "—"
_KIND = {"members": "member", "ensemble": "ensemble", "real": "real"}
_ORDER = ("members", "ensemble", "real")
NOT_ROWS = {"stacker", "feature_space", "feature_net", "mixture", "class_names"}  # details
# Which way is better, to highlight the best generator per column (real rows excluded).
_BETTER = {
    m.name: max if m.higher_is_better else min
    for m in METRICS.values()
    if m.higher_is_better is not None
}

Row = tuple[str, str, Mapping[str, object]]


def _rows(metrics: Mapping[str, object]) -> list[Row]:
    """(name, kind, values) for every model, members first, then ensembles, then real."""
    sections = [s for s in _ORDER if s in metrics] + [
        s for s in metrics if s not in _ORDER and s not in NOT_ROWS
    ]
    rows: list[Row] = []
    for section in sections:
        body = metrics[section]
        if not isinstance(body, Mapping) or not body:
            continue
        kind = _KIND.get(section, section)
        if all(isinstance(v, Mapping) for v in body.values()):
            rows += [(str(name), kind, vals) for name, vals in body.items()]
        else:
            rows.append((section, kind, body))
    return rows


def _columns(rows: list[Row]) -> list[str]:
    """Every scalar metric name, in order of first appearance (lists get tables of their own)."""
    return list(
        dict.fromkeys(str(k) for _, _, vals in rows for k, v in vals.items() if not _is_list(v))
    )


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple)


def _list_tables(rows: list[Row], names_of: Sequence[str] | None = None) -> list[dict]:
    """One table per list-valued metric (e.g. coverage per class): a row per model, a column
    per position, headed by `names_of` (class names) when there is one for each."""
    metrics = dict.fromkeys(str(k) for _, _, vals in rows for k, v in vals.items() if _is_list(v))
    tables = []
    for metric in metrics:
        body = [
            (name, kind, vals[metric]) for name, kind, vals in rows if _is_list(vals.get(metric))
        ]
        width = max(len(v) for _, _, v in body)
        tables.append(
            {
                "metric": metric,
                "columns": [
                    str(names_of[i]) if names_of and len(names_of) == width else str(i)
                    for i in range(width)
                ],
                "rows": [
                    {
                        "name": n,
                        "kind": k,
                        "cells": [fmt(x) for x in v] + [MISSING] * (width - len(v)),
                    }
                    for n, k, v in body
                ],
            }
        )
    return tables


def fmt(value: object) -> str:
    """Human-friendly cell text: ints as is, floats to 4 significant digits, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isnan(x):
            return MISSING
        return f"{x:,.0f}" if math.isfinite(x) and abs(x) >= 10_000 else f"{x:.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def metrics_frame(metrics: Mapping[str, object]) -> pd.DataFrame:
    """The report's table as a DataFrame: a row per model (members, combinations, real), the
    columns `model`, `kind` and every scalar metric found (lists get tables of their own)."""
    rows = _rows(metrics)
    columns = _columns(rows)
    body = [{"model": n, "kind": k, **{c: vals.get(c) for c in columns}} for n, k, vals in rows]
    return pd.DataFrame(body, columns=["model", "kind", *columns], dtype=object)


def comparable(frame: pd.DataFrame) -> tuple[pd.Series, dict[str, str]]:
    """Which generator rows may be crowned best, and why each other one may not: a figure is
    compared only between rows scored on the same image count (FD falls with the count), and
    never for a row that narrows (a selection trading diversity for fidelity), a collapsed
    member or a blend (NOT_A_SAMPLE: its images are no model's samples)."""
    generators = frame["kind"] != "real"
    counts = (
        pd.to_numeric(frame.loc[generators, "n_images"], errors="coerce")
        if "n_images" in frame
        else pd.Series(dtype=float)
    )
    usual = counts.mode().max() if counts.notna().any() else None  # the count most rows have
    why: dict[str, str] = {}
    for row in frame[generators].to_dict("records"):
        name, n = str(row["model"]), row.get("n_images")
        if row["kind"] == "ensemble" and name in NOT_A_SAMPLE:
            why[name] = NOT_A_SAMPLE[name]
        elif row.get("narrows") is True:
            why[name] = "narrows: recall or coverage below the plain mixture's"
        elif row.get("collapsed") is True:
            why[name] = "collapsed"
        elif usual is not None and isinstance(n, int | float) and n != usual:
            why[name] = f"scored on {fmt(n)} images, not {fmt(usual)}"
    return generators & ~frame["model"].astype(str).isin(why), why


def _best(frame: pd.DataFrame) -> dict[str, object]:
    """Best value per known-direction column among the comparable generator rows."""
    best: dict[str, object] = {}
    rows = frame[comparable(frame)[0]]
    for col in (c for c in frame.columns if c in _BETTER):
        vals = [
            v for v in rows[col]
            if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
        ]  # fmt: skip
        if len(vals) > 1:
            best[col] = _BETTER[col](vals)
    return best


# The figures people compare, in a width a terminal shows; the rest are in the report.
TERMINAL_COLUMNS = ("fd", "kid", "precision", "recall", "coverage", "class_kl", "n_images")


def metrics_table(metrics: Mapping[str, object], columns: Sequence[str] | None = None) -> str:
    """The report's table as plain text, for the end of a run's log; `columns`: only those
    (the ones present), beside the model and its kind."""
    frame = metrics_frame(metrics)
    if columns is not None:
        frame = frame[["model", "kind", *(c for c in columns if c in frame.columns)]]
    align = ["left", "left"] + ["right"] * (len(frame.columns) - 2)
    cells = frame.map(fmt)
    cells[["model", "kind"]] = frame[["model", "kind"]]
    return tabulate(
        cells.values.tolist(), headers=list(frame.columns), disable_numparse=True,
        colalign=align,
    )  # fmt: skip


# The report's main table: the figures a night is read by; the others follow in a second table,
# so neither is wider than the page.
MAIN_COLUMNS = (
    "fd", "kid", "kid_std", "precision", "recall", "density", "coverage", "classes_covered",
    "class_kl", "n_images", "narrows",
)  # fmt: skip

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1180px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.real td{color:#666;font-style:italic}
td.best{font-weight:bold;background:#e6f4e6}
.wide{overflow-x:auto}
.grids{display:flex;flex-wrap:wrap;gap:1.5em}
figure{margin:0}figcaption{text-align:center;font-size:.9em}
img{image-rendering:pixelated;border:1px solid #ccc;width:280px;height:auto}
.chart svg,img.chart{max-width:100%;height:auto;image-rendering:auto;width:auto;border:0}
dt{font-weight:bold}dd{margin:0 0 .5em 1em;font-family:monospace;word-break:break-all}
</style></head><body>
<h1>{{ title }}</h1>
{% if tonight %}<h2>Tonight</h2>
<p>Drawn by <code>publish</code>: the batch published, the promotion gate's verdict against the
champion figure by figure, who was left out, the time, and real images beside the batch's.</p>
<img class="chart" src="{{ tonight }}" alt="not published yet: publish draws this">
{% endif %}
<h2>Metrics</h2>
{% for t in tables %}{% if t.rows and t.columns %}<div class="wide"><table>
<tr><th>model</th><th>kind</th>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr class="{{ r.kind }}"><td>{{ r.name }}</td><td>{{ r.kind }}</td>
{% for cell in r.cells %}<td class="num{{ ' best' if cell.best }}">{{ cell.text }}</td>{% endfor %}
</tr>
{% endfor %}</table></div>
{% if loop.first %}<p class="best-note">{{ best_note }}</p>{% endif %}
{% endif %}{% else %}<p>No metrics.</p>{% endfor %}
{% if notes %}<ul>{% for k, note in notes %}<li><b>{{ k }}</b>: {{ note }}</li>{% endfor %}</ul>
{% endif %}
{% for name, svg in charts %}<h2>{{ name | capitalize }}</h2>
<div class="chart">{{ svg }}</div>
{% endfor %}
{% if history %}<h2>History</h2>
<p>FD, KID, recall and coverage per night, for the published combination and each member (✕: not
promoted by the gate), with the last night's verdict above. Drawn by <code>publish</code> from
the store's history.</p>
<img class="chart" src="{{ history }}" alt="no history yet: it is drawn when a batch is published">
{% endif %}
{% for t in list_tables %}<h3>{{ t.metric }}</h3>
{% if t.metric in notes_by_name %}<p>{{ notes_by_name[t.metric] }}</p>{% endif %}
<div class="wide"><table>
<tr><th>model</th><th>kind</th>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr class="{{ r.kind }}"><td>{{ r.name }}</td><td>{{ r.kind }}</td>
{% for cell in r.cells %}<td class="num">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
{% endfor %}
{% if grids %}<h2>Samples</h2>
<div class="grids">{% for name, src in grids %}
<figure><img src="{{ src }}" alt="{{ name }} samples"><figcaption>{{ name }}</figcaption></figure>
{% endfor %}</div>{% endif %}
{% if extra %}<h2>Details</h2>
<dl>{% for k, v in extra %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}
</body></html>
"""
_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _table(frame: pd.DataFrame, columns: list[str], best: Mapping[str, object]) -> dict:
    """One HTML table's columns and cells, the best value of each column marked in the rows
    that compare (`comparable`)."""
    eligible = comparable(frame)[0]
    rows = [
        {
            "name": row["model"],
            "kind": row["kind"],
            "cells": [
                {
                    "text": fmt(row[c]),
                    "best": ok and c in best and row[c] == best[c],
                }
                for c in columns
            ],
        }
        for row, ok in zip(frame.to_dict("records"), eligible, strict=True)
    ]
    return {"columns": columns, "rows": rows}


def best_note(frame: pd.DataFrame) -> str:
    """What the bold cells mean, and which rows they leave out and why."""
    why = comparable(frame)[1]
    left = "; ".join(f"{name} ({reason})" for name, reason in why.items())
    return (
        "Bold: the best value of each figure among members and combinations scored on the "
        "same number of images, leaving out rows that narrow, collapsed members and blends"
        + (f". Left out here: {left}." if left else ".")
    )


def write_html(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, object],
    grids: Mapping[str, str | Path],
    extra: Mapping[str, object] | None = None,
    charts: Mapping[str, str] | None = None,
    history: str | None = "history.svg",
    tonight: str | None = "tonight.svg",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Render the one-page report (autoescaped, so names cannot inject markup), atomically.
    `history` and `tonight`: the charts publish draws beside it; `class_names`: the list
    tables' column headers (class indices without them)."""
    frame = metrics_frame(metrics)
    columns = list(frame.columns[2:])
    main = [c for c in MAIN_COLUMNS if c in columns]
    rest = [c for c in columns if c not in main]
    best = _best(frame)
    html = _ENV.from_string(_TEMPLATE).render(
        title=title,
        tables=[_table(frame, main, best), _table(frame, rest, best)] if columns else [],
        best_note=best_note(frame),
        grids=[(name, Path(src).as_posix()) for name, src in grids.items()],
        notes=[(c, NOTES[c]) for c in columns if c in NOTES],
        notes_by_name=NOTES,
        list_tables=_list_tables(_rows(metrics), class_names),
        extra=[(k, fmt(v)) for k, v in (extra or {}).items()],
        charts=[(k, Markup(v)) for k, v in (charts or {}).items()],  # our own SVG, inline
        history=history,
        tonight=tonight,
    )
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
