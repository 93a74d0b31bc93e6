"""Report: sample grids, the HTML page and the plain-text metrics table."""

from __future__ import annotations

import re

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
    assert html.count("<img ") == 5  # three grids, tonight's card and the history (publish's)
    assert 'src="history.svg"' in html and 'src="tonight.svg"' in html
    # what was published and the gate's verdict (tonight's card) come first, before the table
    assert html.index('src="tonight.svg"') < html.index("<h2>Metrics</h2>")
    assert html.index("<h2>Metrics</h2>") < html.index('src="history.svg"')
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


def _bold(html: str) -> list[str]:
    return re.findall(r'<td class="num best">([^<]*)</td>', html)


def test_best_is_crowned_only_among_rows_that_compare(tmp_path) -> None:
    """mh on fewer images, mean (a blend) and a narrowing vote are never the bold best,
    whatever their figures, and the page says which rows were left out and why."""
    row = {"fd": 50.0, "precision": 0.5, "recall": 0.9, "coverage": 0.9, "n_images": 1000}
    metrics = {
        "members": {"a": row, "b": {**row, "fd": 60.0, "collapsed": True, "precision": 0.99}},
        "ensemble": {
            "mixture": {**row, "fd": 40.0, "narrows": False},
            "mean": {**row, "fd": 3106.0, "precision": 0.97, "narrows": False},
            "vote": {**row, "precision": 0.95, "recall": 0.99, "coverage": 0.99, "narrows": True},
            "mh": {**row, "fd": 30.0, "n_images": 600, "narrows": False},
        },
        "real": {**row, "fd": 1.0, "precision": 1.0},
    }
    html = report.write_html(tmp_path / "i.html", title="t", metrics=metrics, grids={})
    text = html.read_text(encoding="utf-8")
    assert _bold(text) == ["0.5", "0.9", "0.9", "40", "0.5", "0.9", "0.9"]  # a, then mixture
    note = re.search(r'<p class="best-note">([^<]*)</p>', text).group(1)
    for name, why in [("b", "collapsed"), ("mean", "blend"), ("vote", "narrows"),
                      ("mh", "scored on 600 images, not 1000")]:  # fmt: skip
        assert re.search(rf"\b{name} \([^)]*{why}", note), (name, note)
    assert "mixture (" not in note and "a (" not in note


def test_the_main_table_holds_the_key_figures_and_the_rest_follow() -> None:
    metrics = {"ensemble": {"mixture": {"fd": 1.0, "recall": 0.5, "accept_rate": 1.0}}}
    tables = re.findall(r"<table>.*?</table>", _html(metrics), re.S)
    assert "<th>fd</th>" in tables[0] and "<th>accept_rate</th>" not in tables[0]
    assert "<th>accept_rate</th>" in tables[1] and "<th>fd</th>" not in tables[1]


def test_list_tables_are_headed_by_class_names(tmp_path) -> None:
    metrics = {"members": {"a": {"fd": 1.0, "coverage_per_class": [0.5, 0.25]}}}
    html = _html(metrics, class_names=["T-shirt/top", "Trouser"])
    assert "<th>T-shirt/top</th><th>Trouser</th>" in html
    assert "<th>0</th><th>1</th>" in _html(metrics)  # without names: the class index
    assert "<th>0</th><th>1</th>" in _html(metrics, class_names=["only one"])  # not one each


def _html(metrics: dict, **kwargs: object) -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = report.write_html(Path(tmp) / "i.html", title="t", metrics=metrics, grids={},
                                 **kwargs)  # fmt: skip
        return path.read_text(encoding="utf-8")


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


def _panel_limits(table) -> dict[str, tuple[str, tuple[float, float]]]:
    """Each metrics-chart panel's x scale and limits, drawn as the report draws them."""
    import matplotlib.pyplot as plt

    from ensgan.eval import charts

    captured = {}
    real_svg = charts.svg_of

    def grab(fig):  # noqa: ANN001, ANN202 - the figure, before it is closed
        for ax in fig.axes:
            captured[ax.get_title().split(" ")[0]] = (ax.get_xscale(), ax.get_xlim())
        return real_svg(fig)

    charts.svg_of = grab
    try:
        charts.metrics_chart(table)
    finally:
        charts.svg_of = real_svg
        plt.close("all")
    return captured


def test_the_metrics_chart_fits_each_axis_to_its_data() -> None:
    """The pixel mean's FD of thousands is drawn apart (an arrow at the edge, with its value)
    instead of squashing the others; a member that far off takes a log axis; recall 0.97
    against 0.98 is drawn on an axis zoomed to them, not 0-1."""
    import pandas as pd

    from ensgan.eval.charts import metrics_chart

    rows = [("a", "member", 30.0, 0.97), ("b", "member", 35.0, 0.975),
            ("mixture", "ensemble", 32.0, 0.98), ("mean", "ensemble", 3106.0, 0.14)]  # fmt: skip
    table = pd.DataFrame([{"model": m, "kind": k, "fd": fd, "kid": 0.01, "recall": r,
                           "coverage": r} for m, k, fd, r in rows])  # fmt: skip
    panels = _panel_limits(table)
    scale, (left, right) = panels["fd"]
    assert scale == "linear" and left > 25 and right < 40  # fitted without the blend
    assert "3,106" in metrics_chart(table)  # the blend's value, at the axis edge
    scale, (left, right) = panels["recall"]
    assert scale == "linear" and 0.9 < left < 0.97 and 0.98 < right <= 1.0
    far = table.assign(model=["a", "b", "mixture", "c"], kind="member")
    assert _panel_limits(far)["fd"][0] == "log"  # a member is no blend: on the axis, log


def test_one_night_of_history_spans_days_not_years() -> None:
    import pandas as pd

    from ensgan.eval.charts import history_chart

    night = {"run_id": ["r1"], "decision": ["promoted"], "model": "ensemble", "fd": [10.0],
             "kid": [0.1], "recall": [0.9], "coverage": [0.8]}  # fmt: skip
    frame = pd.DataFrame({"at": pd.to_datetime(["2026-03-04T02:00:00"], utc=True), **night})
    svg = history_chart(frame, "r1: promoted; latest is r1")
    assert "2025" not in svg and "2027" not in svg  # matplotlib's default spanned years
    assert "Mar" in svg or "03-0" in svg
