"""`generate` never writes a batch from a collapsed member, and evaluate flags one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensgan.config import load_params
from ensgan.ensemble.combinations import Ensemble, Sample
from ensgan.errors import OutputError
from ensgan.layout import Layout
from ensgan.pipeline import evaluate, generate, prepare, stack, train
from tests.helpers import write_tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = write_tiny_project(tmp_path_factory.mktemp("guard"))
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    for name in params.members:
        train.run(params, layout, name, progress=False)
    stack.run(params, layout)
    yield params, layout
    torch.set_num_threads(threads)


def test_generate_refuses_a_batch_with_a_collapsed_member(
    project: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, layout = project
    real_sample = Ensemble.sample

    def member_a_collapsed(self, method: str, n: int, seed: int) -> Sample:
        s = real_sample(self, method, n, seed)
        images = s.images.copy()
        images[np.asarray(s.members) == "a"] = 0  # member a draws nothing but black
        return Sample(images, s.members, s.seeds, s.scores)

    monkeypatch.setattr(Ensemble, "sample", member_a_collapsed)
    with pytest.raises(OutputError, match=r"collapsed output \(a: all \d+ images are blank"):
        generate.run(params, layout)
    assert not layout.batches.exists() or not any(layout.batches.iterdir())
    monkeypatch.undo()
    result = generate.run(params, layout)  # the real members are fine
    assert result["status"] == "new" and result["n_images"] == params.generate.n_images


def test_evaluate_flags_collapse_per_member(
    project: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, layout = project
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
