"""The evaluate stage writes its whole report in one directory swap: a failure part-way leaves
the previous report whole, and files a user keeps in reports/ survive every run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ensgan.config import load_params
from ensgan.layout import Layout
from ensgan.pipeline import evaluate, prepare, stack, train
from tests.conftest import write_tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = write_tiny_project(tmp_path_factory.mktemp("evaluate"))
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    for name in params.members:
        train.run(params, layout, name, progress=False)
    stack.run(params, layout)
    yield params, layout
    torch.set_num_threads(threads)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_a_failed_evaluate_leaves_the_previous_report_whole(
    project: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, layout = project
    metrics = evaluate.run(params, layout)
    assert set(metrics["members"]) == set(params.members)
    reports = layout.reports
    (reports / "notes.md").write_text("mine")  # a user's file beside the report
    before = _snapshot(reports)
    assert {"metrics.json", "index.html", "feature_net.safetensors", "plots/fd.csv"} <= set(before)
    assert {f"grids/{n}.png" for n in params.members} <= set(before)

    def broken(*args, **kwargs):
        raise OSError("disk full while writing index.html")

    monkeypatch.setattr(evaluate, "write_html", broken)
    with pytest.raises(OSError, match="disk full"):
        evaluate.run(params.model_copy(update={"evaluate": params.evaluate.model_copy(
            update={"seed": 1})}), layout)  # fmt: skip
    assert _snapshot(reports) == before  # not one file of the new run got in
    assert sorted(p.name for p in reports.parent.iterdir() if p.name.startswith(".")) == []

    monkeypatch.undo()
    evaluate.run(params, layout)
    assert (reports / "notes.md").read_text() == "mine"
