"""The configurations shipped in configs/: each one validates as it stands, names only keys
the project reads, and the Fashion-MNIST night prepares its data as it says (a small seeded
subset here; benchmarks and docs/results.md run it whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ensgan.config import ConfigError, load_params, parse_params
from ensgan.data.prepared import load_prepared, prepare
from ensgan.orchestration.versioning import check_dvc_params, missing_params

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


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


@pytest.mark.parametrize("path", [*CONFIGS, REPO / "params.yaml"], ids=lambda p: p.name)
def test_each_configuration_writes_out_every_key_dvc_reads(path: Path) -> None:
    """DVC reads params.yaml itself: a key left to ensgan's default is missing to it."""
    assert missing_params(REPO, path) == []


def test_a_params_file_without_a_key_dvc_reads_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc commit` after training (or `dvc repro` at its start) would refuse it: the flow and
    `ensgan validate` refuse it first, in one line naming the keys."""
    from typer.testing import CliRunner

    from ensgan.cli import app
    from ensgan.orchestration import flow

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["train"]["ensemble"], raw["combine"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert missing_params(tmp_path, tmp_path / "params.yaml") == [
        "combine.weights", "train.ensemble", "combine",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"leaves out combine\.weights, train\.ensemble"):
        check_dvc_params(tmp_path, "params.yaml")
    with pytest.raises(ConfigError, match="write them out"):
        flow.run("params.yaml", str(tmp_path))  # before a server starts or data is read
    assert not (tmp_path / "data").exists()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["validate"])
    assert res.exit_code == 2 and "train.ensemble" in res.output
    assert len(res.output.strip().splitlines()) == 1
    other = tmp_path / "other.yaml"  # a file dvc.yaml's stages do not read: no DVC record
    other.write_text(yaml.safe_dump(raw))
    check_dvc_params(tmp_path, "other.yaml")


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
