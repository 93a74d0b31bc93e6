"""Stage `generate`: a batch is never written from a collapsed member."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ensgan.config import load_params
from ensgan.ensemble.combinations import Ensemble, Sample
from ensgan.errors import OutputError
from ensgan.layout import Layout
from ensgan.pipeline import generate


def test_generate_refuses_a_batch_with_a_collapsed_member(
    staged_project: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shutil.copytree(staged_project["root"], tmp_path / "p")
    params, layout = load_params(root / "params.yaml"), Layout(root)
    shutil.rmtree(layout.batches)  # else generate finds its batch made and samples nothing
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
    assert result["run_id"] == staged_project["generate"]["run_id"]  # the batch it refused
