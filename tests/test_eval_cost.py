"""benchmarks/eval_cost.py end to end at two tiny sizes: evaluate timed from the inside has a
row per member and combination, parts that add up within each row, and leaves every function
it wrapped as it was."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

import ensgan.eval.metrics as metrics_module
from ensgan.ensemble.combinations import METHODS, Ensemble
from ensgan.pipeline import evaluate
from tests.helpers import load_benchmark


def _benchmark() -> ModuleType:
    return load_benchmark("eval_cost")


def test_cost_table_times_evaluate_row_by_row(
    staged_project: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _benchmark()
    wrapped = (Ensemble.member_sample, evaluate.score_member, metrics_module.frechet_distance)
    argv = ["--project", str(staged_project["root"]), "--sizes", "8", "16", "--count", "64"]
    out = bench.main([*argv, "--steps", "2", "--work", str(tmp_path)])
    assert (Ensemble.member_sample, evaluate.score_member, metrics_module.frechet_distance) == (
        wrapped
    )
    rows = ["member a", "member b", *METHODS]
    extra = ["feature net fit", "rest of evaluate", "evaluate"]
    for size, table in out.items():
        assert list(table.index) == rows + extra, size
        assert {"generators", "frechet_distance", "prdc_mean"} <= set(table.columns)
        assert (table.drop(columns="rest of sampling") >= 0).all().all()
        parts = table.drop(columns="total").loc[rows].sum(axis=1)
        assert parts.to_numpy() == pytest.approx(table.loc[rows, "total"].to_numpy())
        assert table.loc["evaluate", "total"] == pytest.approx(
            table.loc[rows + extra[:2]].total.sum()
        )
        assert (tmp_path / f"size-{size}/reports/metrics.json").is_file()
    assert "where evaluate's time goes" in capsys.readouterr().out


def test_against_another_commit_prints_its_rows_beside_this_trees(
    staged_project: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--against REV runs REV's own cost_at (from `git archive`, in its own process) on the
    same params, and prints each row's total beside this tree's."""
    bench = _benchmark()
    argv = ["--project", str(staged_project["root"]), "--sizes", "8", "--count", "64"]
    bench.main([*argv, "--steps", "2", "--work", str(tmp_path), "--against", "HEAD"])
    lines = capsys.readouterr().out.splitlines()
    header = lines[lines.index("per row, side by side:") + 1]
    assert [c.strip() for c in header.strip("|").split("|")][1:] == ["8 px @HEAD", "8 px"]
    assert (tmp_path / "at-HEAD-size-8/reports/metrics.json").is_file()  # REV's evaluate ran
    with pytest.raises(SystemExit, match="no commit 'no-such-rev'"):
        bench.main(
            [*argv, "--steps", "2", "--work", str(tmp_path / "x"), "--against", "no-such-rev"]
        )
