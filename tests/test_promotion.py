"""The promotion gate: a worse night is published as a candidate and never becomes `latest`;
`batches promote` overrides it by hand; `batches pull latest` gets the champion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.config import GateConfig
from ensgan.errors import BatchError
from ensgan.io.batches import publish_batch
from ensgan.io.promotion import (
    gate,
    history,
    judge,
    latest,
    not_compared,
    promote,
    resolve,
    statuses,
    verdict,
)
from ensgan.io.storage import LocalStore
from ensgan.pipeline.publish import verdict_line
from tests.helpers import make_batch

GOOD = {"fd": 100.0, "recall": 0.95, "coverage": 0.80, "class_kl": 0.02}
runner = CliRunner()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"fd": 109.0}, None),  # within 10 %
        ({"fd": 111.0}, "fd 111 > 100 + 10%"),
        ({"recall": 0.94}, None),
        ({"recall": 0.92}, "recall 0.92 < 0.95 - 0.02"),
        ({"coverage": 0.77}, "coverage 0.77 < 0.8 - 0.02"),
        ({"class_kl": 0.08}, "class_kl 0.08 > 0.02 + 0.05"),
        ({"fd": 50.0, "recall": 1.0}, None),  # better is always fine
    ],
)
def test_judge_compares_each_figure_within_its_tolerance(change: dict, reason: str | None) -> None:
    reasons = judge({**GOOD, **change}, GOOD, GateConfig())
    assert reasons == ([] if reason is None else [reason])


def test_judge_skips_unset_tolerances_and_needs_a_champion() -> None:
    worse = {**GOOD, "fd": 500.0, "recall": 0.5}
    assert judge(worse, GOOD, GateConfig(fd=None, recall=None)) == []
    assert judge(worse, None, GateConfig()) == []  # nothing to compare with: the first batch
    assert "no evaluation" in judge(None, GOOD, GateConfig())[0]
    assert len(judge(worse, GOOD, GateConfig())) == 2


def test_fd_is_compared_only_at_equal_image_counts() -> None:
    """FD falls as the count grows, so a night evaluated on more images than the champion
    must not pass (or fail) by the count alone: FD is left out, and the verdict says so."""
    champion = {**GOOD, "n_images": 2000}
    much_worse_fd = {**GOOD, "fd": 500.0, "n_images": 60000}
    assert judge(much_worse_fd, champion, GateConfig()) == []
    assert not_compared(much_worse_fd, champion) == [
        "fd: measured on 60000 images, the champion's on 2000"
    ]
    # the other figures are still judged, and equal counts compare FD as before
    assert judge({**much_worse_fd, "recall": 0.5}, champion, GateConfig()) == [
        "recall 0.5 < 0.95 - 0.02"
    ]
    assert judge({**much_worse_fd, "n_images": 2000}, champion, GateConfig()) == [
        "fd 500 > 100 + 10%"
    ]
    assert not_compared(much_worse_fd, GOOD) == []  # a champion from before counts were kept


def test_the_verdict_records_what_it_did_not_compare(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", {**GOOD, "n_images": 2000}, seed=1)
    second = _publish(store, tmp_path, "night-2", {**GOOD, "fd": 150.0, "n_images": 60000}, 2)
    assert second["decision"] == "promoted" and second["latest"] == "night-2"
    assert second["not_compared"] == ["fd: measured on 60000 images, the champion's on 2000"]
    assert verdict(store, "night-2")["not_compared"] == second["not_compared"]
    assert "not compared: fd: measured on 60000" in verdict_line("night-2", second)


def _publish(store: LocalStore, tmp: Path, run_id: str, metrics: dict | None, seed: int) -> dict:
    batch_dir = tmp / "out" / run_id
    if not batch_dir.exists():
        make_batch(tmp / "out", run_id, seed=seed)
    prefix = publish_batch(store, batch_dir)["prefix"]
    members = {"a": {"fd": 120.0}, "b": {"fd": 130.0}}
    return gate(store, run_id, prefix, metrics, members, GateConfig())


def test_a_worse_batch_stays_a_candidate_until_promoted_by_hand(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = _publish(store, tmp_path, "night-1", GOOD, seed=1)
    assert first == {
        "decision": "promoted",
        "reasons": [],
        "champion": None,
        "not_compared": [],
        "latest": "night-1",
    }
    assert latest(store)["how"] == "first"

    worse = _publish(store, tmp_path, "night-2", {**GOOD, "coverage": 0.5}, seed=2)
    assert worse["decision"] == "candidate" and worse["latest"] == "night-1"
    assert worse["reasons"] == ["coverage 0.5 < 0.8 - 0.02"] and worse["champion"] == "night-1"
    assert resolve(store, "latest") == "night-1"
    why = "candidate: coverage 0.5 < 0.8 - 0.02"
    assert statuses(store) == {"night-1": "latest", "night-2": why}

    better = _publish(store, tmp_path, "night-3", {**GOOD, "fd": 90.0}, seed=3)
    assert better["decision"] == "promoted" and resolve(store, "latest") == "night-3"
    assert statuses(store)["night-1"] == "promoted earlier"

    promote(store, "night-2")  # by hand, against the gate
    assert latest(store)["how"] == "by hand" and resolve(store, "latest") == "night-2"
    again = _publish(store, tmp_path, "night-2", {**GOOD, "coverage": 0.5}, seed=2)
    assert again["decision"] == "candidate" and again["latest"] == "night-2"  # verdict kept
    assert len(store.list_keys("batches/")) == 3 * 5  # nothing deleted (3 shards, json, manifest)


def test_the_next_night_is_judged_against_the_champion_not_the_last_candidate(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    _publish(store, tmp_path, "night-2", {**GOOD, "fd": 300.0}, seed=2)  # a bad night
    third = _publish(store, tmp_path, "night-3", {**GOOD, "fd": 290.0}, seed=3)
    assert third["decision"] == "candidate" and third["champion"] == "night-1"


def test_a_kill_between_verdict_and_pointer_is_finished_by_the_next_publish(
    tmp_path: Path,
) -> None:
    from ensgan.io import promotion

    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    real = promotion._point_latest
    promotion._point_latest = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _publish(store, tmp_path, "night-2", {**GOOD, "fd": 90.0}, seed=2)
    finally:
        promotion._point_latest = real
    assert promotion.verdict(store, "night-2")["decision"] == "promoted"
    assert resolve(store, "latest") == "night-1"  # the pointer had not moved
    assert _publish(store, tmp_path, "night-2", {**GOOD, "fd": 90.0}, seed=2)["latest"] == "night-2"
    promote(store, "night-1")  # later moved back by hand: publishing night-2 again keeps that
    assert _publish(store, tmp_path, "night-2", {**GOOD, "fd": 90.0}, seed=2)["latest"] == "night-1"


def test_history_is_a_dataframe_of_every_night_and_model(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert history(store).empty
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    _publish(store, tmp_path, "night-2", {**GOOD, "fd": 300.0}, seed=2)
    frame = history(store)
    assert list(frame["model"]) == ["ensemble", "a", "b"] * 2
    ens = frame[frame["model"] == "ensemble"]
    assert list(ens["fd"]) == [100.0, 300.0] and list(ens["decision"]) == ["promoted", "candidate"]
    assert str(frame["at"].dtype).startswith("datetime64")


def test_resolve_latest_before_any_promotion_says_so(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(BatchError, match="no batch has been promoted"):
        resolve(store, "latest")
    with pytest.raises(BatchError, match="no complete batch"):
        promote(store, "night-9")


def test_cli_ls_says_why_and_pull_latest_gets_the_champion(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    _publish(store, tmp_path, "night-2", {**GOOD, "recall": 0.5}, seed=2)
    where = ["--store", str(tmp_path / "store")]

    res = runner.invoke(app, ["batches", "ls", *where])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].endswith("latest") and "night-1" in lines[0]
    assert "night-2" in lines[1] and lines[1].endswith("candidate: recall 0.5 < 0.95 - 0.02")

    res = runner.invoke(app, ["batches", "pull", "latest", str(tmp_path / "dl"), *where])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dl" / "night-1" / "manifest.jsonl").is_file()
    assert "night-1" in runner.invoke(app, ["batches", "show", "latest", *where]).output

    res = runner.invoke(app, ["batches", "promote", "night-2", *where])
    assert res.exit_code == 0 and "night-2 is now latest" in res.output
    assert json.loads((tmp_path / "store" / "latest.json").read_text())["run_id"] == "night-2"
    res = runner.invoke(app, ["batches", "promote", "night-7", *where])
    assert res.exit_code == 2 and "no complete batch 'night-7'" in res.output


def test_the_batch_commands_import_no_torch(tmp_path: Path) -> None:
    """Consumers who only list, pull and promote do not pay for torch, sklearn or Prefect."""
    import subprocess
    import sys

    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    where = str(tmp_path / "store")
    code = (
        "import sys; from typer.testing import CliRunner; from ensgan.cli import app; "
        f"w = ['--store', {where!r}]; r = CliRunner(); "
        "codes = [r.invoke(app, ['batches', *a, *w]).exit_code for a in "
        f"(['ls'], ['promote', 'night-1'], ['pull', 'latest', {str(tmp_path / 'dl')!r}])]; "
        "print(codes, sorted({'torch', 'sklearn', 'prefect'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0, 0, 0] []"
