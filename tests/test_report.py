"""Report: sample grids, the HTML page and the plain-text metrics table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ensgan.eval import report
from ensgan.io.images import save_grid

METRICS = {
    "members": {
        "dcgan_a": {"fd": 12.3456, "classes_covered": 9, "class_kl": 0.0123},
        "<b>evil</b>": {"fd": 40.0, "classes_covered": 4},
    },
    "ensemble": {
        "mixture": {"fd": 9.5, "classes_covered": 10, "class_kl": 0.004},
        "vote": {"fd": 8.25, "classes_covered": 10, "class_kl": 0.002, "accept_rate": 0.25},
    },
    "real": {"fd": 1.5, "classes_covered": 10, "class_kl": 0.0, "coverage_per_class": [1.0, 0.9]},
}


def test_save_grid_pixel_size(tmp_path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (10, 1, 16, 16), dtype=np.uint8)
    path = save_grid(images, tmp_path / "g" / "grid.png", nrow=4, pad=1, scale=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == ((4 * 17 + 1) * 4, (3 * 17 + 1) * 4)
        px = np.asarray(im)
    assert np.array_equal(px[4:8, 4:8], np.full((4, 4), images[0, 0, 0, 0]))  # nearest upscale


def test_save_grid_rgb_default_nrow(tmp_path) -> None:
    images = np.zeros((9, 3, 8, 8), np.uint8)
    with Image.open(save_grid(images, tmp_path / "rgb.png", scale=2, pad=0)) as im:
        assert im.mode == "RGB" and im.size == (48, 48)


def test_save_grid_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError):
        save_grid(np.zeros((0, 1, 8, 8), np.uint8), tmp_path / "x.png")
    with pytest.raises(ValueError):
        save_grid(np.zeros((2, 1, 8, 8), np.float32), tmp_path / "x.png")


def test_write_html(tmp_path) -> None:
    grids = {"dcgan_a": "grids/dcgan_a.png", "vote": "grids/vote.png", "real": "grids/real.png"}
    extra = {"data hash": "abc123", "stacker CV AUC": 0.8765, "note": "<script>x</script>"}
    charts = {"loss curves": '<svg id="chart"><text>g</text></svg>'}
    path = report.write_html(
        tmp_path / "r" / "index.html", title="Run <1>", metrics=METRICS, grids=grids,
        extra=extra, charts=charts,
    )  # fmt: skip
    html = path.read_text(encoding="utf-8")
    for name in ("dcgan_a", "mixture", "vote", "real"):
        assert f"<td>{name}</td>" in html
    for metric in ("fd", "classes_covered", "class_kl", "accept_rate"):
        assert f"<th>{metric}</th>" in html
    assert html.count("<img ") == 4  # three grids and the history chart (publish draws it)
    assert 'src="history.svg"' in html
    # the gate's verdict (the history chart's title) is on the first screen, before the table
    assert html.index('src="history.svg"') < html.index("<h2>Metrics</h2>")
    assert '<svg id="chart"><text>g</text></svg>' in html  # our chart, inline and unescaped
    for src in grids.values():
        assert f'src="{src}"' in html
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
    assert "<script>" not in html and "Run &lt;1&gt;" in html
    assert "12.35" in html and "0.8765" in html and "abc123" in html
    assert "—" in html  # the member without class_kl
    # A list-valued metric is a table of its own, not a cell of JSON.
    assert "<th>coverage_per_class</th>" not in html and "<h3>coverage_per_class</h3>" in html
    assert '<td class="num">0.9</td>' in html
    assert not list(path.parent.glob("*.tmp"))


def test_write_html_marks_best_generator(tmp_path) -> None:
    html = report.write_html(tmp_path / "i.html", title="t", metrics=METRICS, grids={}).read_text(
        encoding="utf-8"
    )
    assert '<td class="num best">8.25</td>' in html  # lowest fd among generators
    assert '<td class="num best">1.5</td>' not in html  # the real baseline never wins


def test_metrics_table_lists_all_rows() -> None:
    text = report.metrics_table(METRICS)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["model", "kind"]
    for metric in ("fd", "classes_covered", "class_kl", "accept_rate"):
        assert metric in lines[0]
    for name in ("dcgan_a", "<b>evil</b>", "mixture", "vote", "real"):
        assert any(line.startswith(name) for line in lines), name
    assert len(lines) == 2 + 5
    assert "—" in text


def test_the_stacker_section_is_not_a_model_row() -> None:
    metrics = {
        "members": {"a": {"fd": 1.0}},
        "stacker": {"model": "logistic", "ece_raw": 0.1, "real_acceptance_by_class": [1.0]},
    }
    table = report.metrics_table(metrics)
    assert "stacker" not in table and "ece_raw" not in table


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (3, "3"), (0.012345, "0.01235"), (12.3456, "12.35"), (123456.7, "123,457")],
)
def test_fmt(value: object, text: str) -> None:
    assert report.fmt(value) == text


def test_metrics_frame_is_the_table_as_a_dataframe() -> None:
    frame = report.metrics_frame(METRICS)
    assert list(frame["model"]) == ["dcgan_a", "<b>evil</b>", "mixture", "vote", "real"]
    assert list(frame["kind"]) == ["member", "member", "ensemble", "ensemble", "real"]
    assert {"fd", "classes_covered", "class_kl", "accept_rate"} <= set(frame.columns)
    assert frame.loc[frame["model"] == "real", "fd"].item() == METRICS["real"]["fd"]
    assert "coverage_per_class" not in frame.columns  # a list: a table of its own


def test_the_metrics_chart_draws_kid_with_its_standard_deviation() -> None:
    """One panel per charted figure, KID's with error bars of its kid_std (none without)."""
    import pandas as pd

    from ensgan.eval.charts import FIGURES, metrics_chart

    rows = [("a", "member", 0.02, 0.004), ("mixture", "ensemble", 0.01, 0.003),
            ("real", "real", 0.0, 0.002)]  # fmt: skip
    table = pd.DataFrame(
        [{"model": m, "kind": k, **dict.fromkeys(FIGURES, 0.5), "kid": v, "kid_std": sd}
         for m, k, v, sd in rows]
    )  # fmt: skip
    svg = metrics_chart(table)
    assert "kid (lower is better)" in svg and "fd (lower is better)" in svg
    assert "recall (lower" not in svg
    without = metrics_chart(table.drop(columns="kid_std"))
    assert svg.count("<path") > without.count("<path")  # the error bars
