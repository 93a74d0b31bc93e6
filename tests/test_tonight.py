"""The report's first screen (reports/tonight.svg, drawn by publish): the night's lines, the
gate figure by figure, real images beside the published batch's own."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ensgan.eval.charts import external_refs
from ensgan.eval.tonight import batch_images, figure_rows, tonight_card
from tests.helpers import make_batch

FIGURES = [
    {"figure": "fd", "batch": 12.0, "champion": 10.0, "lower_is_better": True,
     "bound": 11.3, "how": "10 + 13%", "passed": False},
    {"figure": "recall", "batch": 0.91, "champion": 0.9, "lower_is_better": False,
     "bound": 0.893, "how": "0.9 - 0.007", "passed": True},
    {"figure": "kid", "batch": 1.0, "champion": 2.0, "lower_is_better": True,
     "passed": False, "not_compared": "measured in inception features, the champion's in domain"},
]  # fmt: skip


def test_batch_images_are_the_batchs_first_images_across_shards(tmp_path: Path) -> None:
    batch_dir, images = make_batch(tmp_path, n=7)  # shards of 3
    assert np.array_equal(batch_images(batch_dir, 5), images[:5])  # two shards read
    assert np.array_equal(batch_images(batch_dir, 50), images)  # no more than it has
    gray, one_channel = make_batch(tmp_path / "g", channels=1)
    assert np.array_equal(batch_images(gray, 2), one_channel[:2])


def test_the_gate_is_shown_figure_by_figure() -> None:
    rows = figure_rows(FIGURES)
    assert rows[0] == ["fd (lower better)", "12", "10", "10 + 13%", "worse"]
    assert rows[1] == ["recall (higher better)", "0.91", "0.9", "0.9 - 0.007", "within"]
    assert rows[2][-1] == "not compared"


def test_the_card_is_a_self_contained_svg_saying_what_happened() -> None:
    lines = ["published: r2 (mixture, 40 images; published)",
             "gate:      r2: not promoted (fd 12 > 10 + 13%); latest stays r1",
             "left out:  member c: RuntimeError: diverged"]  # fmt: skip
    rng = np.random.default_rng(0)
    real, batch = (rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8) for _ in range(2))
    svg = tonight_card(lines, FIGURES, False, real, batch)
    ET.fromstring(svg)
    assert external_refs(svg) == []  # the grids are embedded, not linked
    assert svg.count("<image") == 2
    for text in ["published: r2", "fd 12 &gt; 10 + 13%", "member c", "worse", "within",
                 "not compared", "real images", "published batch"]:  # fmt: skip
        assert text in svg, text
    bare = tonight_card(lines[:2], [], True, None, None)  # the first night: no champion
    assert "no champion compared" in bare and "<image" not in bare


def test_publish_draws_the_card_the_report_shows_first(staged_project: dict) -> None:
    reports = staged_project["root"] / "reports"
    run_id = staged_project["publish"]["run_id"]
    svg = (reports / "tonight.svg").read_text()
    assert f"published: {run_id}" in svg and f"{run_id}: promoted" in svg
    assert svg.count("<image") == 2  # the evaluate split's images and the batch's
    html = (reports / "index.html").read_text()
    assert html.index('src="tonight.svg"') < html.index("<h2>Metrics</h2>")
