"""benchmarks/eval_count.py end to end on the tiny staged project: the count table has every
row at every count and seed, scores rows exactly as `evaluate` does, and resumes from its file."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from ensgan.ensemble.combinations import METHODS
from tests.helpers import load_benchmark


def _benchmark() -> ModuleType:
    return load_benchmark("eval_count")


def test_count_table_scores_every_row_as_evaluate_does(
    staged_project: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench, root = _benchmark(), staged_project["root"]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    n = metrics["members"]["a"]["n_images"]  # the tiny project's evaluate.n_samples
    csv = tmp_path / "runs.jsonl"
    argv = ["--project", str(root), "--counts", "64", str(n), "--seeds", "2", "--runs", str(csv)]
    out = bench.main(argv)
    labels = [f"member {m}" for m in metrics["members"]] + list(METHODS)
    for figure, table in out["tables"].items():
        assert list(table.index) == labels and list(table.columns) == [64, n], figure
    assert {"fd", "recall", "coverage", "class_kl", "seconds"} <= set(out["tables"])
    runs = bench.score_runs(bench.load_project(root, None), [(64, 0), (64, 1), (n, 0), (n, 1)], csv)
    assert len(runs) == len(labels) * 4 and not runs.duplicated(["row", "count", "seed"]).any()
    assert len(csv.read_text().splitlines()) == len(runs)  # resumed: nothing scored again
    n_mh = metrics["ensemble"]["mh"]["n_images"]  # evaluate.n_mh, below n_samples here
    assert set(runs[runs.row == "mh"].n_images) == {min(n_mh, 64), n_mh}
    # At evaluate's own count and seed, every row is evaluate's row.
    at = runs[(runs["count"] == n) & (runs.seed == 0)].set_index("row")
    for name, row in metrics["members"].items():
        assert at.loc[f"member {name}", "fd"] == pytest.approx(row["fd"], rel=1e-6), name
    for method, row in metrics["ensemble"].items():
        assert at.loc[method, "fd"] == pytest.approx(row["fd"], rel=1e-6), method
        assert at.loc[method, "coverage"] == pytest.approx(row["coverage"], rel=1e-6), method
    agreement = out["agreement"].set_index("count")
    pairs = len(labels) * 2 + 4  # each row at seeds (0, 1) and (1, 0); published x best: 2 x 2
    assert [int(v.split("/")[1]) for v in agreement["verdicts agree (pairs)"]] == [pairs, pairs]
    assert [v.split("/")[1] for v in agreement["ranking agrees (seeds)"]] == ["2", "2"]
    assert out["chosen"] in (64, n)
    assert set(out["noise"].figure) <= {"fd", "kid", "recall", "coverage", "class_kl"}
    assert "fd" in set(out["noise"].figure)
    printed = capsys.readouterr().out
    assert "smallest count from which every count agrees" in printed
    assert out["best_member"].startswith("member ")
