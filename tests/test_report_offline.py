"""The report works offline: its charts are drawn by ensgan (inline SVG, and the history as a
local SVG), nothing is fetched from the network, and headless Chromium with no network at all
renders them (`dvc plots show` loads Vega from a CDN and is blank offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ensgan.eval.charts import external_refs, history_chart

pytestmark = pytest.mark.e2e

BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's C0 and C1: members, ensemble


def _shoot(page: Path, out: Path, height: int) -> np.ndarray:
    """A screenshot of `page` by headless Chromium in a network namespace of its own (only a
    loopback that is down): anything the page needed from the network would be missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install chromium (make test does)"
    cmd = ["unshare", "--map-root-user", "--net", chromium, "--headless", "--no-sandbox",
           "--disable-gpu", "--hide-scrollbars", f"--window-size=1200,{height}",
           f"--screenshot={out}", page.resolve().as_uri()]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _pixels(shot: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int((np.abs(shot - np.array(rgb)).sum(axis=2) < 40).sum())


def test_the_report_fetches_nothing_and_its_files_are_there(staged_project: dict) -> None:
    reports = staged_project["root"] / "reports"
    html = (reports / "index.html").read_text()
    assert external_refs(html) == []
    assert html.count("<svg") >= 2  # loss curves and the members/combinations chart, inline
    for src in re.findall(r'<img[^>]* src="([^"]+)"', html):
        assert (reports / src).is_file(), src  # grids and the history chart, beside it
    svg = (reports / "history.svg").read_text()
    assert external_refs(svg) == []
    assert f"{staged_project['generate']['run_id']}: promoted; latest is" in svg  # why
    ET.fromstring(svg)  # well-formed


def test_headless_chromium_offline_renders_the_charts(staged_project: dict, tmp_path: Path) -> None:
    reports = staged_project["root"] / "reports"
    page = _shoot(reports / "index.html", tmp_path / "report.png", 4000)
    assert _pixels(page, BLUE) > 300 and _pixels(page, ORANGE) > 300  # bars and curves drawn
    history = _shoot(reports / "history.svg", tmp_path / "history.png", 400)
    assert _pixels(history, ORANGE) > 50  # the ensemble's line (a night in the store)


def test_external_refs_finds_what_a_browser_would_fetch() -> None:
    page = (
        '<script src="https://cdn.example/vega.js"></script><img src="grids/a.png">'
        "<style>@import 'http://x/y.css'; .a{background:url(//cdn/x.png)}</style>"
    )
    assert external_refs(page) == ["https://cdn.example/vega.js", "//cdn/x.png", "http://x/y.css"]


def test_history_chart_titles_the_gates_verdict() -> None:
    # nights from before KID: the store's history has no kid column, and the chart still draws
    frame = pd.DataFrame({"at": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
                          "run_id": ["r1", "r2"], "decision": ["promoted", "candidate"],
                          "model": "ensemble", "fd": [10.0, 30.0], "recall": 0.9,
                          "coverage": 0.8})  # fmt: skip
    svg = history_chart(frame, "r2: not promoted (fd 30 > 10 + 10%); latest stays r1")
    assert "r2: not promoted (fd 30 &gt; 10 + 10%); latest stays r1" in svg


def test_history_chart_with_no_evaluated_night_says_so() -> None:
    empty = pd.DataFrame(columns=["at", "run_id", "decision", "model", "fd", "recall", "coverage"])
    assert "no evaluated night" in history_chart(empty)
    # a night held back is said even when no night was evaluated, its long reason wrapped
    why = "r1: not promoted (" + "; ".join(["fd not compared: measured on 3000 images"] * 4)
    svg = history_chart(empty, why + "); latest stays r0")
    assert "measured on 3000 images" in svg and "latest stays r0" in svg
