"""The Ray runner's work store (storage.work_url, ensgan/orchestration/remote.py) kept apart
from the published store, and members already finished on the driver's disk kept off Ray:
without a cluster (tests/test_ray.py runs the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensgan.config import ConfigError, load_params
from ensgan.layout import Layout
from ensgan.orchestration import remote
from tests.helpers import write_tiny_project


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_work_store_is_the_stores_sibling_by_its_absolute_path(tmp_path: Path) -> None:
    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"})
    params = load_params(root / "params.yaml")
    work = remote.work_store(params, Layout(root))
    assert work.url == str((root / "store-work").resolve()) and work.work_url is None
    assert (work.endpoint_url, work.read_timeout) == (None, params.storage.read_timeout)


def test_a_work_url_inside_the_published_store_once_resolved_is_refused(tmp_path: Path) -> None:
    """`../project/store/x` and `store` differ as written, not on the disk."""
    storage = {"url": "store", "work_url": "../project/store/x"}
    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"}, storage=storage)
    params = load_params(root / "params.yaml")  # valid as written
    with pytest.raises(ConfigError, match="overlaps storage.url"):
        remote.work_store(params, Layout(root))


@pytest.mark.timeout(300)
def test_members_finished_here_are_reused_and_ray_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every member finished on the driver's disk: _train_on_ray returns their cards as they
    are, stages nothing and starts no runner (a started one fails the test)."""
    from ensgan.orchestration import flow
    from ensgan.pipeline import prepare, train

    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"})
    params, layout = load_params(root / "params.yaml"), Layout(root)
    data = prepare.run(params, layout)
    for name in params.members:
        train.train_one(params, layout, name, progress=False)
    before = _files(root / "models/members")

    def no_ray(*args: object) -> None:
        pytest.fail("a runner was started for members already finished")

    monkeypatch.setattr(flow, "make_runner", no_ray)
    cards, failures = flow._train_on_ray(params, layout, data["sha256"])
    assert failures == {} and [c["name"] for c in cards] == list(params.members)
    for card in cards:
        assert card == json.loads((layout.member(card["name"]) / "card.json").read_text())
    assert _files(root / "models/members") == before
    assert not (root / "store-work").exists() and not (root / "store").exists()
