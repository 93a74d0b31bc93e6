"""Stage `evaluate`: metrics.json carries exactly the table's metrics, and a collapsed member
is flagged in them and in the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ensgan.config import load_params
from ensgan.ensemble.combinations import Ensemble
from ensgan.eval.table import row_keys
from ensgan.layout import Layout
from ensgan.pipeline import evaluate


def test_evaluate_returns_exactly_the_metrics_of_the_table(staged_project: dict) -> None:
    """Each row of metrics.json carries the table's metrics for its kind of row, no others
    (a row scored on fewer images adds the mixture's FD at its count; mh its restarts)."""
    optional = {"mixture_fd_same_count", "restarted_chains"}
    metrics = staged_project["evaluate"]
    rows = [("real", metrics["real"])]
    rows += [("members", r) for r in metrics["members"].values()]
    rows += [("combinations", r) for r in metrics["ensemble"].values()]
    for kind, row in rows:
        assert row_keys(kind) - optional <= set(row) <= row_keys(kind), (kind, sorted(row))
    assert "restarted_chains" in metrics["ensemble"]["mh"]


def test_metrics_say_which_feature_space_each_figure_is_in(staged_project: dict) -> None:
    """The default space is the domain net; classes are always the domain classifier's, and
    the report says which space its figures are in (inception: tests/test_inception.py)."""
    space = staged_project["evaluate"]["feature_space"]
    assert space["name"] == "domain" and space["figures"]["fd"] == "domain"
    assert space["figures"]["recall"] == space["figures"]["kid"] == "domain"
    assert space["figures"]["classes_covered"] == "domain classifier"
    report = (staged_project["root"] / "reports" / "index.html").read_text()
    assert "feature space" in report and "is not an FID" in report


def test_metrics_say_how_good_the_feature_net_is(staged_project: dict) -> None:
    """Its accuracy on the evaluate split (images it never trained on), recomputed here from
    the saved net, so a reader can weigh the domain FD; the report shows it."""
    from ensgan.data.prepared import load_prepared
    from ensgan.eval.features import load_feature_net, predict_classes

    root = staged_project["root"]
    details = staged_project["evaluate"]["feature_net"]
    data = load_prepared(Layout(root).prepared)
    net = load_feature_net(root / "reports" / "feature_net.safetensors")
    pred = predict_classes(net, data.images_of("evaluate"))
    assert details["labels"] == "data" and details["n_evaluate"] == len(pred)
    assert details["evaluate_accuracy"] == pytest.approx(
        float((pred == data.labels_of("evaluate")).mean()), abs=1e-4
    )
    assert details["evaluate_accuracy"] > 0.2  # above chance on ten classes even when tiny
    assert "feature net" in (root / "reports" / "index.html").read_text()
    from ensgan.eval.report import metrics_frame

    rows = set(metrics_frame(staged_project["evaluate"]).model)  # a detail, not a model row
    assert (
        "feature_net" not in rows
        and "evaluate_accuracy" not in metrics_frame(staged_project["evaluate"]).columns
    )


def test_every_row_has_a_kid_and_its_standard_deviation(staged_project: dict) -> None:
    """KID for the real row, every member and combination, in metrics.json and the DVC plot
    table; held-in real images against the hold-out are far closer than any tiny member."""
    import pandas as pd

    metrics = staged_project["evaluate"]
    rows = {"real": metrics["real"], **metrics["members"], **metrics["ensemble"]}
    assert all(type(r["kid"]) is float and r["kid_std"] > 0 for r in rows.values())
    assert all(metrics["real"]["kid"] < m["kid"] for m in metrics["members"].values())
    plot = pd.read_csv(staged_project["root"] / "reports" / "plots" / "fd.csv")
    assert {"kid", "kid_std"} <= set(plot.columns) and plot["kid"].notna().all()
    mixture = metrics["ensemble"]["mixture"]["kid"]
    assert plot.set_index("model").loc["mixture", "kid"] == pytest.approx(mixture, rel=1e-5)


def test_evaluate_flags_collapse_per_member(
    staged_project: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shutil.copytree(staged_project["root"], tmp_path / "p")
    params, layout = load_params(root / "params.yaml"), Layout(root)
    metrics = evaluate.run(params, layout)
    assert {m["collapsed"] for m in metrics["members"].values()} == {False}
    real_member_sample = Ensemble.member_sample

    def a_draws_one_picture(self, name: str, seeds: np.ndarray) -> np.ndarray:
        images = real_member_sample(self, name, seeds)
        return np.repeat(images[:1], len(images), axis=0) if name == "a" else images

    monkeypatch.setattr(Ensemble, "member_sample", a_draws_one_picture)
    (layout.reports / "metrics.json").unlink()  # else the unchanged inputs skip the stage
    metrics = evaluate.run(params, layout)
    assert metrics["members"]["a"]["collapsed"] is True
    assert metrics["members"]["b"]["collapsed"] is False
    assert "collapsed" in (layout.reports / "index.html").read_text()


def test_a_rerun_on_the_same_data_takes_the_earlier_feature_net(
    staged_project: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feature net depends on the data and evaluate's classifier settings alone: an
    evaluation on the same ones takes the last one's net (no training), the same tensors;
    other classifier steps train a new one."""
    import yaml
    from safetensors.numpy import load_file

    root = shutil.copytree(staged_project["root"], tmp_path / "p")
    layout = Layout(root)
    saved = layout.reports / "feature_net.safetensors"
    trained = []
    train = evaluate.train_feature_net
    monkeypatch.setattr(
        evaluate, "train_feature_net", lambda *a, **k: trained.append(k) or train(*a, **k)
    )

    def rerun(**changes: object) -> dict:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        raw["evaluate"] |= changes
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return evaluate.run(load_params(root / "params.yaml"), layout)

    before = load_file(saved)  # the staged project's evaluate saved its net's training key
    rerun(grid_size=3)  # stale for evaluate, the same data and classifier
    assert trained == []
    after = load_file(saved)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in after)
    steps = yaml.safe_load((root / "params.yaml").read_text())["evaluate"]["classifier_steps"]
    rerun(classifier_steps=steps + 1)
    assert len(trained) == 1
