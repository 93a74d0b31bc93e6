"""The promotion gate: a worse night is published as a candidate and never becomes `latest`;
`batches promote` overrides it by hand; `batches pull latest` gets the champion."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.config import GateConfig
from ensgan.errors import BatchError
from ensgan.io.batches import MANIFEST, publish_batch, pull_batch, verify_batch
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
    verdict_line,
)
from ensgan.io.s3 import S3Store
from ensgan.io.storage import LocalStore, Store
from tests.helpers import S3Server, make_batch

GOOD = {"fd": 100.0, "kid": 0.01, "kid_std": 0.002, "recall": 0.95, "coverage": 0.80,
        "class_kl": 0.02}  # fmt: skip
# Explicit tolerances, so these cases test the comparison and not the shipped defaults.
GATE = GateConfig(fd=0.10, kid=1.0, recall=0.02, coverage=0.02, class_kl=0.05)
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
        ({"kid": 0.0128}, None),  # within 1 sd: √2 × the champion's 0.002
        ({"kid": 0.0129}, "kid 0.0129 > 0.01 + 1 × 0.00283 (sd)"),
        ({"kid": 0.0125, "kid_std": 0.0001}, None),  # the night's own sd does not matter
        ({"kid": 0.0129, "kid_std": 0.05}, "kid 0.0129 > 0.01 + 1 × 0.00283 (sd)"),
        ({"kid": -0.001}, None),  # unbiased: below 0 is possible, and better
        ({"fd": 50.0, "recall": 1.0}, None),  # better is always fine
    ],
)
def test_judge_compares_each_figure_within_its_tolerance(change: dict, reason: str | None) -> None:
    reasons = judge({**GOOD, **change}, GOOD, GATE)
    assert reasons == ([] if reason is None else [reason])


def test_judge_skips_unset_tolerances_and_needs_a_champion() -> None:
    worse = {**GOOD, "fd": 500.0, "recall": 0.5}
    assert judge(worse, GOOD, GateConfig(fd=None, recall=None)) == []
    assert judge(worse, None, GATE) == []  # nothing to compare with: the first batch
    assert "no evaluation" in judge(None, GOOD, GATE)[0]
    assert len(judge(worse, GOOD, GATE)) == 2


def test_a_figure_that_cannot_be_compared_holds_the_night_back() -> None:
    """FD falls as the count grows, so a night evaluated on another image count than the
    champion's cannot be judged by it: the gate fails closed, and says why."""
    champion = {**GOOD, "n_images": 2000}
    much_better_fd = {**GOOD, "fd": 5.0, "n_images": 60000}
    why = "fd not compared: measured on 60000 images, the champion's on 2000"
    assert judge(much_better_fd, champion, GATE) == [why]
    assert not_compared(much_better_fd, champion, GATE) == [why.replace(" not compared", "")]
    # the other figures are still judged, and equal counts compare FD as before
    assert judge({**much_better_fd, "recall": 0.5}, champion, GATE) == [
        why, "recall 0.5 < 0.95 - 0.02"
    ]  # fmt: skip
    assert judge({**much_better_fd, "fd": 500.0, "n_images": 2000}, champion, GATE) == [
        "fd 500 > 100 + 10%"
    ]
    assert judge(much_better_fd, GOOD, GATE) == []  # a champion from before counts
    assert judge(much_better_fd, champion, GateConfig(fd=None)) == []  # FD not gated at all


@pytest.mark.parametrize(
    ("candidate", "champion", "why"),
    [
        ({**GOOD, "recall": float("nan")}, GOOD, "recall not compared: nan on this batch"),
        ({"fd": 90.0}, GOOD, "kid not compared: not measured on this batch"),
        ({**GOOD, "kid": None}, GOOD, "kid not compared: not measured on this batch"),
        (GOOD, {**GOOD, "kid_std": None}, "kid not compared: the champion has no kid_std"),
        (GOOD, {**GOOD, "kid": float("inf")}, "kid not compared: the champion's is inf"),
        ({**GOOD, "class_kl": 0.0}, {**GOOD, "class_kl": None}, "class_kl not compared: the "),
    ],
)
def test_a_missing_or_nan_figure_is_not_a_pass(candidate: dict, champion: dict, why: str) -> None:
    """NaN passes every comparison and a missing figure none: neither may promote a night."""
    reasons = judge(candidate, champion, GATE)
    assert reasons and reasons[0].startswith(why)


def test_kid_is_compared_across_image_counts_in_its_own_sds() -> None:
    """KID is unbiased, so a night on another count is still judged by it (FD is not), and
    its tolerance scales with gate.kid."""
    champion = {**GOOD, "n_images": 60000}
    worse_kid = {**GOOD, "kid": 0.02, "n_images": 5000}
    reasons = judge(worse_kid, champion, GATE)
    assert reasons[0].startswith("fd not compared") and reasons[1].startswith("kid 0.02 > ")
    assert judge({**worse_kid, "n_images": 60000}, champion, GateConfig(kid=4.0)) == []
    assert judge({**worse_kid, "n_images": 60000}, champion, GateConfig(kid=None)) == []


def test_figures_of_another_feature_space_are_never_compared() -> None:
    """FD, KID, recall and coverage in Inception features mean other things than in the
    domain net's: each is marked uncomparable, however much better it looks; the class KL is
    the domain classifier's in either space, so it is still judged."""
    domain = {**GOOD, "feature_space": "domain"}
    inception = {**GOOD, "fd": 1.0, "kid": -0.5, "class_kl": 0.5, "feature_space": "inception"}
    why = "measured in inception features, the champion's in domain"
    reasons = judge(inception, domain, GATE)
    assert reasons == [
        *(f"{n} not compared: {why}" for n in ("fd", "kid", "recall", "coverage")),
        "class_kl 0.5 > 0.02 + 0.05",
    ]
    assert not_compared(inception, domain, GateConfig(recall=None))[1] == f"kid: {why}"
    # a champion recorded before the space was kept was measured in the default one
    older = judge(inception, GOOD, GATE)
    predates = " (its record names none: it predates evaluate.feature_space)"
    assert older[0] == f"fd not compared: {why}{predates}"
    assert judge({**GOOD, "feature_space": "domain"}, GOOD, GATE) == []
    assert judge(GOOD, domain, GATE) == []  # and so was a night without one
    assert judge({**inception, "class_kl": 0.02}, {**inception, "fd": 0.9}, GATE) == [
        "fd 1 > 0.9 + 10%"
    ]  # the same space compares as before


def test_the_feature_space_travels_from_metrics_to_the_champion(tmp_path: Path) -> None:
    """publish keeps each row's feature space in the gate's records, so the next night in
    another space is a candidate that says why, and promoting it by hand re-baselines."""
    from ensgan.io.promotion import figures

    row = {**GOOD, "n_images": 100, "collapsed": False}
    assert figures(row, "inception") == {**GOOD, "n_images": 100.0, "feature_space": "inception"}
    assert figures(row) == {**GOOD, "n_images": 100.0}
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", figures(row, "domain"), seed=1)
    assert latest(store).metrics["feature_space"] == "domain"
    second = _publish(store, tmp_path, "night-2", figures(row, "inception"), 2)
    assert second["decision"] == "candidate" and second["latest"] == "night-1"
    why = "measured in inception features, the champion's in domain"
    assert second["not_compared"][0] == f"fd: {why}"
    promote(store, "night-2")
    third = _publish(store, tmp_path, "night-3", figures(row, "inception"), 3)
    assert third["decision"] == "promoted" and third["not_compared"] == []


def test_an_uncomparable_night_is_a_candidate_until_promoted_by_hand(tmp_path: Path) -> None:
    """A 3,000-image evaluation must not replace a 60,000-image champion by itself: it is a
    candidate, `ls` says why and names the command that re-baselines, and promoting it by
    hand makes it the baseline the next night (on the same protocol) is judged against."""
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", {**GOOD, "n_images": 60000}, seed=1)
    second = _publish(store, tmp_path, "night-2", {**GOOD, "fd": 50.0, "n_images": 3000}, 2)
    assert second["decision"] == "candidate" and second["latest"] == "night-1"
    assert second["not_compared"] == ["fd: measured on 3000 images, the champion's on 60000"]
    assert verdict(store, "night-2").not_compared == second["not_compared"]
    line = verdict_line("night-2", second)
    assert line.startswith("night-2: not promoted (fd not compared: measured on 3000 images")
    assert "`ensgan batches promote night-2`" in line and line.endswith("latest stays night-1")
    res = runner.invoke(app, ["batches", "ls", "--store", str(tmp_path / "store")])
    assert "night-2" in res.output and "candidate: fd not compared" in res.output
    assert "`ensgan batches promote night-2` makes this batch the champion" in res.output

    assert (
        runner.invoke(
            app, ["batches", "promote", "night-2", "--store", str(tmp_path / "store")]
        ).exit_code
        == 0
    )
    third = _publish(store, tmp_path, "night-3", {**GOOD, "fd": 52.0, "n_images": 3000}, 3)
    assert third["decision"] == "promoted" and third["champion"] == "night-2"


def _publish(store: LocalStore, tmp: Path, run_id: str, metrics: dict | None, seed: int) -> dict:
    batch_dir = tmp / "out" / run_id
    if not batch_dir.exists():
        make_batch(tmp / "out", run_id, seed=seed)
    prefix = publish_batch(store, batch_dir)["prefix"]
    members = {"a": {"fd": 120.0}, "b": {"fd": 130.0}}
    return gate(store, run_id, prefix, metrics, members, GATE)


def test_a_worse_batch_stays_a_candidate_until_promoted_by_hand(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = _publish(store, tmp_path, "night-1", GOOD, seed=1)
    assert first == {
        "decision": "promoted",
        "reasons": [],
        "champion": None,
        "not_compared": [],
        "latest": "night-1",
        "figures": [],  # no champion to compare with
    }
    assert latest(store).how == "first"

    worse = _publish(store, tmp_path, "night-2", {**GOOD, "coverage": 0.5}, seed=2)
    assert worse["decision"] == "candidate" and worse["latest"] == "night-1"
    assert worse["reasons"] == ["coverage 0.5 < 0.8 - 0.02"] and worse["champion"] == "night-1"
    by_figure = {f["figure"]: f for f in worse["figures"]}  # the report's figure-by-figure
    assert by_figure["coverage"] == {
        "figure": "coverage", "batch": 0.5, "champion": 0.8, "lower_is_better": False,
        "bound": pytest.approx(0.78), "how": "0.8 - 0.02", "passed": False,
    }  # fmt: skip
    assert all(f["passed"] for name, f in by_figure.items() if name != "coverage")
    assert resolve(store, "latest") == "night-1"
    why = "candidate: coverage 0.5 < 0.8 - 0.02"
    assert statuses(store) == {"night-1": "latest", "night-2": why}

    better = _publish(store, tmp_path, "night-3", {**GOOD, "fd": 90.0}, seed=3)
    assert better["decision"] == "promoted" and resolve(store, "latest") == "night-3"
    assert statuses(store)["night-1"] == "promoted earlier"

    promote(store, "night-2")  # by hand, against the gate
    assert latest(store).how == "by hand" and resolve(store, "latest") == "night-2"
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
    assert promotion.verdict(store, "night-2").decision == "promoted"
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


def _forge(store: Store, prefix: str, tmp: Path, run_id: str) -> None:
    """What whoever can write to the bucket can do: put other images under the same run_id,
    with every checksum made to match (shards, manifest rows, sidecars, batch.json)."""
    forged, _ = make_batch(tmp / "forged", run_id, seed=99)
    for name in sorted(p.name for p in forged.iterdir() if p.name != MANIFEST) + [MANIFEST]:
        store.put_file(forged / name, prefix + name)


def _champion_replaced_whole(store: Store, tmp_path: Path, where: list[str]) -> None:
    first = _publish(store, tmp_path, "night-1", GOOD, seed=1)
    assert first["latest"] == "night-1"
    pinned = latest(store).manifest_sha256
    assert pinned == verdict(store, "night-1").manifest_sha256
    prefix = latest(store).prefix
    _forge(store, prefix, tmp_path, "night-1")
    # the forgery is self-consistent: without the pin it pulls and verifies
    assert verify_batch(pull_batch(store, "night-1", tmp_path / "unpinned")) == 7

    res = runner.invoke(app, ["batches", "pull", "latest", str(tmp_path / "dl"), *where])
    assert res.exit_code == 2, res.output
    assert f"pin {pinned}: the batch was replaced after it was judged" in res.output
    assert not (tmp_path / "dl" / "night-1").exists()  # nothing kept
    res = runner.invoke(app, ["batches", "pull", "night-1", str(tmp_path / "dl"), *where])
    assert res.exit_code == 2 and "replaced after it was judged" in res.output  # the verdict's pin
    res = runner.invoke(app, ["batches", "promote", "night-1", *where])
    assert res.exit_code == 2 and "replaced after it was judged" in res.output
    assert latest(store).manifest_sha256 == pinned  # the pin was not moved to the forgery


def test_a_champion_replaced_whole_is_refused_by_pull_latest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _champion_replaced_whole(store, tmp_path, ["--store", str(tmp_path / "store")])


@pytest.mark.e2e
def test_a_champion_replaced_whole_in_a_bucket_is_refused(
    tmp_path: Path, seaweedfs: S3Server, s3_bucket: Callable
) -> None:
    bucket = s3_bucket(seaweedfs)
    store = S3Store(bucket, "team", seaweedfs.endpoint_url, "us-east-1")
    where = ["--store", f"s3://{bucket}/team", "--endpoint-url", seaweedfs.endpoint_url]
    _champion_replaced_whole(store, tmp_path, where)


def test_a_repair_of_a_replaced_champion_downloads_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    where = ["--store", str(tmp_path / "store")]
    pull = ["batches", "pull", "latest", str(tmp_path / "dl"), *where]
    assert runner.invoke(app, pull).exit_code == 0
    (tmp_path / "dl" / "night-1" / "shard-00001.tar").unlink()
    _forge(store, latest(store).prefix, tmp_path, "night-1")
    res = runner.invoke(app, [*pull, "--repair"])
    assert res.exit_code == 2 and "replaced after it was judged" in res.output
    kept = sorted(p.name for p in (tmp_path / "dl" / "night-1").iterdir())
    assert "shard-00001.tar" not in kept  # nothing of the forgery was downloaded
    original = (tmp_path / "out" / "night-1" / MANIFEST).read_bytes()
    assert (tmp_path / "dl" / "night-1" / MANIFEST).read_bytes() == original


def test_a_champion_pinned_before_pinning_existed_still_pulls(tmp_path: Path) -> None:
    """latest.json written by an ensgan that pinned nothing: pull checks the checksums only."""
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    for key in ("latest.json", "gate/night-1.json"):
        path = tmp_path / "store" / key
        record = json.loads(path.read_text())
        del record["manifest_sha256"]
        path.write_text(json.dumps(record))
    res = runner.invoke(app, ["batches", "pull", "latest", str(tmp_path / "dl"), "--store",
                              str(tmp_path / "store")])  # fmt: skip
    assert res.exit_code == 0, res.output


def test_an_unreadable_champion_holds_the_night_back_and_never_fails_the_publish(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    (tmp_path / "store" / "latest.json").write_text(json.dumps({"run_id": "night-1"}))
    second = _publish(store, tmp_path, "night-2", {**GOOD, "fd": 50.0}, seed=2)
    assert second["decision"] == "candidate" and second["latest"] is None
    assert (
        "latest.json is not a valid champion record (prefix: Field required"
        in (second["reasons"][0])
    )
    assert "`ensgan batches promote night-2`" in second["reasons"][1]
    res = runner.invoke(app, ["batches", "ls", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0 and "warning: no batch is latest" in res.output
    assert "night-1" in res.output and "night-2" in res.output
    promote(store, "night-2")  # what the reason says: a readable champion again
    assert _publish(store, tmp_path, "night-3", {**GOOD, "fd": 49.0}, seed=3)["latest"] == "night-3"


def test_an_unreadable_verdict_is_kept_aside_and_the_batch_judged_afresh(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", GOOD, seed=1)
    _publish(store, tmp_path, "night-2", {**GOOD, "coverage": 0.5}, seed=2)
    bad = tmp_path / "store" / "gate" / "night-2.json"
    bad.write_text('{"run_id": "night-2", "reasons": []}')  # no decision
    assert "unreadable gate verdict" in statuses(store)["night-2"]
    again = _publish(store, tmp_path, "night-2", {**GOOD, "coverage": 0.5}, seed=2)
    assert again["decision"] == "candidate"
    aside = [p for p in (tmp_path / "store" / "gate").iterdir() if ".unreadable-" in p.name]
    assert [p.read_text() for p in aside] == ['{"run_id": "night-2", "reasons": []}']
    assert statuses(store)["night-2"] == "candidate: coverage 0.5 < 0.8 - 0.02"


def test_a_champion_without_metrics_makes_the_next_evaluated_night_a_candidate(
    tmp_path: Path,
) -> None:
    """Promoted by hand before it was evaluated: there is nothing to judge the next night by."""
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "night-1", None, seed=1)  # the first: promoted, no metrics
    second = _publish(store, tmp_path, "night-2", GOOD, seed=2)
    assert second["decision"] == "candidate"
    assert second["reasons"][0] == "not compared: the champion night-1 has no recorded metrics"
