"""The configurations shipped in configs/: each one validates as it stands, names only keys
the project reads, and the Fashion-MNIST night prepares its data as it says (a small seeded
subset here; benchmarks and docs/results.md run it whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ensgan.config import load_params, parse_params
from ensgan.data.prepared import load_prepared, prepare

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configurations_to_check() -> None:
    assert {p.name for p in CONFIGS} >= {"fashion-mnist.yaml", "fashion-mnist-gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_configuration_validates_and_says_how_to_run_it(path: Path) -> None:
    params = load_params(path)
    assert params.data.source == "fashion_mnist" and params.data.image_size == 32
    text = path.read_text()
    assert f"cp configs/{path.name} params.yaml" in text  # the documented way to run it
    raw = yaml.safe_load(text)
    assert set(raw["members"]) == set(params.members)
    # The real reference PRDC uses fits its cap: nothing of the evaluate split is silently
    # dropped beyond what the config says.
    assert params.evaluate.prdc_real <= params.evaluate.n_samples


def test_the_fashion_mnist_night_prepares_32px_labelled_images(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIGS[0].parent / "fashion-mnist.yaml").read_text())
    raw["data"]["max_images"] = 400
    params = parse_params(raw)
    card = prepare(params.data, tmp_path / "prepared")
    data = load_prepared(tmp_path / "prepared")
    assert card.shape == [400, 1, 32, 32] and data.n_classes == 10
    assert len(np.unique(data.labels)) == 10
    n_eval = len(data.images_of("evaluate"))
    assert n_eval == pytest.approx(0.15 * 400, abs=10)
