"""Members on a real Ray cluster: `train.runner: ray` trains each member as a
Ray task on the worker node (the head has no CPUs), where the task reads the prepared data
from the store and writes the member back to it; the driver picks the members up from there
and the flow stacks, evaluates and publishes as on one machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensgan.config import ConfigError, parse_params
from tests.helpers import REPO, stored_text, tiny_params, write_tiny_project

pytestmark = pytest.mark.e2e


def in_namespaces(command: str, out: Path, timeout: float) -> dict:
    """`command` (from the repository root) in a network and PID namespace of its own, as
    tests/ray_cluster.py describes; the JSON it wrote to `out`. Its HOME holds a Ray token
    from some other use of Ray (~/.ray/auth_token), as a user's may: the cluster must not
    read it."""
    assert shutil.which("unshare"), "unshare (util-linux) is needed for a private network"
    home = out.parent / "home"
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text("a-token-from-some-other-cluster\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    res = subprocess.run(
        ["unshare", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
         "sh", "-c", f"ip link set lo up && exec {command}"],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env | {"HOME": str(home)},
    )  # fmt: skip
    assert res.returncode == 0 and out.is_file(), (res.stdout + res.stderr)[-6000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(420)
def test_the_flow_trains_members_on_a_ray_cluster(tmp_path: Path) -> None:
    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"})
    out = tmp_path / "out.json"
    script = f"{sys.executable} {REPO / 'tests' / 'ray_cluster.py'} {root} {out}"
    result = in_namespaces(script, out, timeout=400)
    summary = result["summary"]
    workers = {n["id"] for n in result["nodes"] if n["cpus"] > 0}
    head = {n["id"] for n in result["nodes"] if n["cpus"] == 0}
    assert len(workers) == 1 and len(head) == 1
    trained_on = summary["trained_on"]
    assert set(trained_on) == {"a", "b"} and set(trained_on.values()) == workers
    assert summary["published"]["status"] == "published" and summary["left_out"] == {}
    for name in ("a", "b"):  # picked up from the store, and they load
        card = json.loads((root / "models/members" / name / "card.json").read_text())
        assert card["steps"] == 30 and (root / "models/members" / name / "checkpoint").is_dir()
    assert_staged_apart(root, trained={"a", "b"})
    print(f"cluster up in {result['cluster_seconds']:.1f} s, flow {result['flow_seconds']:.1f} s")


PUBLISHED = ("batches/", "gate/", "history/", "latest.json")  # what publish writes, all of it


def assert_staged_apart(root: Path, trained: set[str]) -> None:
    """The published store holds the batch and its records only; the prepared data and the
    members Ray trained (those only) are in the work store, its sibling store-work."""
    from ensgan.io.storage import LocalStore

    published = LocalStore(root / "store").list_keys()
    assert published and all(k.startswith(PUBLISHED) for k in published), published
    assert any(k.startswith("batches/") and k.endswith("manifest.jsonl") for k in published)
    staged = LocalStore(root / "store-work").list_keys()
    assert {k.split("/")[0] for k in staged} == {"data", "members"}, staged
    assert {k.split("/")[1] for k in staged if k.startswith("members/")} == trained, staged


@pytest.mark.timeout(420)
def test_a_member_finished_here_is_not_sent_to_the_ray_cluster(tmp_path: Path) -> None:
    """Member a trained on the driver's disk before the run: only b goes to Ray; a's files,
    its card (its seconds, its fingerprint) included, are as they were."""
    from ensgan.config import load_params
    from ensgan.layout import Layout
    from ensgan.pipeline import prepare, train

    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"})
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    train.train_one(params, layout, "a", progress=False)
    folder = layout.member("a")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    card = json.loads((folder / "card.json").read_text())
    out = tmp_path / "out.json"
    script = f"{sys.executable} {REPO / 'tests' / 'ray_cluster.py'} {root} {out}"
    summary = in_namespaces(script, out, timeout=400)["summary"]
    assert set(summary["trained_on"]) == {"b"}, summary["trained_on"]
    assert summary["published"]["status"] == "published" and summary["left_out"] == {}
    assert summary["members"]["a"] == card["fingerprint"][:12]
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    assert after == before
    kept = json.loads((folder / "card.json").read_text())  # not trained again, not rewritten
    assert [kept[k] for k in ("seconds_this_run", "fingerprint")] == [
        card[k] for k in ("seconds_this_run", "fingerprint")
    ]
    assert_staged_apart(root, trained={"b"})


def test_ray_runner_refuses_boosting() -> None:
    text = tiny_params(train={"runner": "ray", "ensemble": "boosting"})
    import yaml

    with pytest.raises(ConfigError, match="train.runner: ray trains bagged members"):
        parse_params(yaml.safe_load(text))


def test_a_stop_signal_waiting_inside_ray_sets_the_flag_and_the_handlers_come_back() -> None:
    """The driver's wait on its member tasks (flow._wait_on_ray) and its start of Ray: inside
    Ray's wait a handler's exception is lost, so there a signal only sets the flag; and a
    handler ray.init sets (sys.exit with the signal's number) does not outlive the start."""
    import os
    import signal

    from ensgan import stopping

    with stopping.on_stop_signals():
        with stopping.handlers_kept():  # as ray.init does to the driver
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        assert signal.getsignal(signal.SIGTERM) is stopping.on_signal
        with stopping.flag_only():
            os.kill(os.getpid(), signal.SIGTERM)  # raised here, it would fail this test
            time.sleep(0.1)
            assert stopping.requested() and stopping.reason() == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is stopping.on_signal
        assert signal.getsignal(signal.SIGINT) is stopping.on_signal


def test_prefects_termination_signal_ends_a_command_as_a_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In a flow Prefect's SIGTERM handler raises its TerminationSignal, not our stop: the
    command still ends with the stop's one line and status 143."""
    import signal

    import typer
    from prefect.exceptions import TerminationSignal

    from ensgan.cli import _run

    def flow() -> None:
        raise TerminationSignal(signal=signal.SIGTERM)

    with pytest.raises(typer.Exit) as ended:
        _run(flow)
    assert ended.value.exit_code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: stopped (SIGTERM); the next run resumes from the checkpoints"
    )


def test_a_member_in_the_store_is_the_cache_across_machines(tmp_path: Path) -> None:
    """Without Ray: the task body run twice from two empty folders (two "nodes") trains once;
    the second finds the member finished in the store and returns its card untouched."""
    import yaml

    from ensgan.config import StorageConfig
    from ensgan.data.prepared import prepare
    from ensgan.io.storage import LocalStore
    from ensgan.layout import Layout
    from ensgan.orchestration import remote

    params = parse_params(yaml.safe_load(tiny_params()))
    driver = Layout(tmp_path / "driver")
    data = prepare(params.data, driver.prepared)
    store = LocalStore(tmp_path / "work")  # the work store (storage.work_url)
    remote.stage_data(store, driver, data.sha256)
    storage = StorageConfig(url=str(tmp_path / "work")).model_dump(mode="json")
    dump = params.model_dump(mode="json")
    first = remote.train_elsewhere("a", dump, storage, data.sha256, threads=1)
    keys = {k: (tmp_path / "work" / k).stat().st_mtime_ns for k in store.list_keys("members/")}
    second = remote.train_elsewhere("a", dump, storage, data.sha256, threads=1)
    assert {k: v for k, v in first.items() if k != "trained_on"} == {
        k: v for k, v in second.items() if k != "trained_on"
    }
    (listing,) = (tmp_path / "work/members/a").glob("*/files.json")
    files = json.loads(listing.read_text())["files"]
    upload = listing.parent.relative_to(tmp_path / "work").as_posix()
    ckpt = [
        f"{upload}/{remote.OBJECTS}{e['sha256']}"
        for name, e in files.items()
        if name.endswith("generator_ema.safetensors")
    ]
    assert ckpt and all((tmp_path / "work" / k).stat().st_mtime_ns == keys[k] for k in ckpt)
    remote.fetch_member(store, driver, "a", first)  # and the driver picks it up, checked
    assert json.loads((driver.member("a") / "card.json").read_text())["steps"] == 30
    weights = tmp_path / "work" / ckpt[0]
    weights.write_bytes(bytes(weights.stat().st_size))  # same size, other bytes
    with pytest.raises(Exception, match="does not match its sha256"):
        remote.fetch_member(store, driver, "a", first)


@pytest.mark.timeout(300)
def test_a_stop_reaches_a_member_elsewhere_through_the_store_and_it_resumes(
    tmp_path: Path,
) -> None:
    """Without Ray: the task body trains far longer than the test waits, on its own thread as
    on a node. Its checkpoints reach the store as they are made; the run's stop (written to the
    store) makes it stop at its next step and upload that step; a later task resumes there."""
    import threading

    import yaml

    from ensgan import stopping
    from ensgan.config import StorageConfig
    from ensgan.data.prepared import prepare
    from ensgan.errors import StopRequested
    from ensgan.io.storage import LocalStore
    from ensgan.layout import Layout
    from ensgan.orchestration import remote

    train = {"steps": 100_000, "checkpoint_every": 5, "log_every": 5}
    params = parse_params(yaml.safe_load(tiny_params(train=train)))
    driver = Layout(tmp_path / "driver")
    data = prepare(params.data, driver.prepared)
    store = LocalStore(tmp_path / "work")  # the work store (storage.work_url)
    remote.stage_data(store, driver, data.sha256)
    storage = StorageConfig(url=str(tmp_path / "work")).model_dump(mode="json")
    dump = params.model_dump(mode="json")
    outcome: list[BaseException] = []

    def node() -> None:
        try:
            remote.train_elsewhere("a", dump, storage, data.sha256, 1, stop_token="run1")
        except BaseException as exc:  # what the task ends with
            outcome.append(exc)

    def uploaded_step() -> int:
        listed = list((tmp_path / "work/members/a").glob("*/files.json"))
        state = stored_text(listed[0].parent, "checkpoint/state.json") if listed else "{}"
        return json.loads(state).get("step", 0)

    task = threading.Thread(target=node)
    task.start()
    try:
        deadline = time.monotonic() + 200
        while uploaded_step() < 5 and task.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert uploaded_step() >= 5, outcome  # a periodic checkpoint, in the store already
        remote.request_stop(store, "run1")
        task.join(timeout=120)  # not a measure: unstopped, it would train on
        assert not task.is_alive(), "the member did not stop"
    finally:
        stopping.request("test over")  # never leave a training thread behind
        task.join(timeout=120)
        stopping.clear()
    assert len(outcome) == 1 and isinstance(outcome[0], StopRequested), outcome
    reached = uploaded_step()
    # The step it stopped at (not only the last periodic checkpoint) is the one uploaded.
    assert reached >= 5 and f"stopped at step {reached} of" in str(outcome[0])

    steps = reached + 10  # train.steps is not part of a member's identity: it resumes
    more = parse_params({**dump, "train": {**dump["train"], "steps": steps}})
    card = remote.train_elsewhere("a", more.model_dump(mode="json"), storage, data.sha256, 1)
    assert card["steps"] == steps
    remote.fetch_member(store, driver, "a", card)
    with open(driver.member("a") / "losses.csv") as f:
        logged = [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]
    # Every fifth step and the last one (`loop.train` logs the final step whatever its number).
    expected = sorted({*range(5, steps + 1, 5), steps})
    assert logged == expected, logged  # nothing lost, nothing repeated


@pytest.mark.timeout(1500)
def test_no_member_task_outlives_its_driver_on_a_ray_cluster(tmp_path: Path) -> None:
    """tests/ray_stop.py on a real cluster: three drivers in turn, each trained until every
    member has uploaded a checkpoint past what the one before left. SIGTERM, then SIGINT: the
    driver exits with the signal's status and one line, each member task stops at its next
    step, uploads that very step (its last loss row: log_every 1) and ends, and the next
    driver resumes there. kill -9: no member task is left running and the store's member
    files stop changing, within a bound that is no measure (the figures are printed)."""
    train = {"runner": "ray", "steps": 100_000, "checkpoint_every": 10, "log_every": 1}
    root = write_tiny_project(tmp_path / "project", train=train)
    out = tmp_path / "out.json"
    result = in_namespaces(f"{sys.executable} -m tests.ray_stop {root} {out}", out, 1440)
    phases = {p["signal"]: p for p in result["phases"]}
    assert list(phases) == ["SIGTERM", "SIGINT", "SIGKILL"], result["phases"][-1]
    before = {n: 0 for n in ("a", "b")}
    for name, status in (("SIGTERM", 143), ("SIGINT", 130)):
        seen = phases[name]
        why = json.dumps({k: v for k, v in seen.items() if k != "log_tail"}) + seen["log_tail"]
        assert seen["status"] == status, why
        assert seen["errors"] == [
            f"error: stopped ({name}); the next run resumes from the checkpoints"
        ], why
        assert seen["tasks_at_signal"] and seen["tasks_gone_seconds"] is not None, why
        assert seen["store_last_changed_seconds"] is not None and seen["tasks_left"] == [], why
        assert seen["intact"] == {"a": True, "b": True}, why
        # The step each task stopped at is the step in the store, not a periodic checkpoint's.
        assert seen["stopped_at"] == seen["uploaded"] == seen["last_rows"], why
        assert all(seen["uploaded"][n] > before[n] for n in before), why
        before = seen["uploaded"]
    for name in ("SIGINT", "SIGKILL"):  # the rows the last driver left are kept: resumed
        assert phases[name]["resumed"] == {"a": True, "b": True}, phases[name]
    killed = phases["SIGKILL"]
    assert killed["status"] == -9 and killed["tasks_at_signal"], killed
    assert killed["tasks_gone_seconds"] is not None and killed["tasks_left"] == [], killed
    assert killed["store_last_changed_seconds"] is not None, killed
    assert all(killed["uploaded"][n] > before[n] for n in before), killed
    print(
        f"cluster up in {result['cluster_seconds']:.1f} s; "
        + "; ".join(
            f"{p['signal']}: driver exited in {p['exit_seconds']:.1f} s, tasks gone in "
            f"{p['tasks_gone_seconds']:.1f} s, store last changed at "
            f"{p['store_last_changed_seconds']:.1f} s, uploads whole: {p['intact']}"
            for p in result["phases"]
        )
    )
