"""What the stage commands print under `dvc repro`: a line or two of outcome each (the whole
result with --json), and evaluate's bar per row, on the staged tiny project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.config import load_params
from ensgan.layout import Layout
from ensgan.pipeline import evaluate

runner = CliRunner()

EXPECTED = {  # what each command's lines must say, from the staged project's results
    "prepare": lambda r: [f"prepared digits: {r['shape'][0]} images", f"train {r['n_train']}"],
    "train": lambda r: [f"member {n}: {c['arch']} width {c['width']}" for n, c in r.items()],
    "stack": lambda r: [f"CV ROC AUC {r['cv_roc_auc']:.3f}", "(unchanged"],
    "generate": lambda r: [f"already there: batch {r['run_id']}, {r['n_images']} images"],
    "publish": lambda r: [f"batch {r['run_id']}", "gate: ", "promoted"],
}


@pytest.fixture
def project(staged_project: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = shutil.copytree(staged_project["root"], tmp_path / "project")
    monkeypatch.chdir(root)
    return root


@pytest.mark.parametrize("stage", list(EXPECTED))
def test_a_stage_prints_a_few_lines_and_its_result_with_json(
    stage: str, staged_project: dict, project: Path
) -> None:
    res = runner.invoke(app, [stage])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) <= (len(staged_project["train"]) + 1 if stage == "train" else 2)
    assert "{" not in res.stdout and "\\x" not in res.stdout  # no JSON card, nothing escaped
    for part in EXPECTED[stage](staged_project[stage]):
        assert part in res.stdout, (part, res.stdout)

    res = runner.invoke(app, [stage, "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    keys = {"at", "up_to_date", "status", "path", "url"}  # what a rerun may say differently
    for key, value in staged_project[stage].items():
        if key not in keys:
            assert result[key] == value, key


def test_evaluate_prints_the_key_figures_in_a_terminals_width(project: Path) -> None:
    res = runner.invoke(app, ["evaluate"])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) <= 100
    assert "mixture" in res.stdout and "reports/index.html" in res.stdout
    metrics = json.loads(runner.invoke(app, ["evaluate", "--json"]).stdout)
    assert set(metrics["members"]) == {"a", "b"}


def test_evaluate_draws_a_bar_per_row(project: Path, capsys: pytest.CaptureFixture) -> None:
    params, layout = load_params(project / "params.yaml"), Layout(project)
    (layout.reports / "metrics.json").unlink()  # so it evaluates again
    metrics = evaluate.run(params, layout, progress=True)
    err = capsys.readouterr().err
    ensemble = metrics["ensemble"]
    rows = ["real", *metrics["members"], *(m for m in ensemble if "error" not in ensemble[m])]
    for row in rows:
        assert f"evaluate {row}: " in err, row
    assert err.count("images scored") >= len(rows)

    (layout.reports / "metrics.json").unlink()
    evaluate.run(params, layout, progress=False)
    assert "evaluate " not in capsys.readouterr().err
