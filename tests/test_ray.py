"""Members on a real Ray cluster: `train.runner: ray` trains each member as a
Ray task on the worker node (the head has no CPUs), where the task reads the prepared data
from the store and writes the member back to it; the driver picks the members up from there
and the flow stacks, evaluates and publishes as on one machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensgan.config import ConfigError, parse_params
from tests.helpers import REPO, tiny_params, write_tiny_project

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(420)
def test_the_flow_trains_members_on_a_ray_cluster(tmp_path: Path) -> None:
    root = write_tiny_project(tmp_path / "project", train={"runner": "ray"})
    out = tmp_path / "out.json"
    script = f"ip link set lo up && exec {sys.executable} {REPO / 'tests' / 'ray_cluster.py'} "
    script += f"{root} {out}"
    assert shutil.which("unshare"), "unshare (util-linux) is needed for a private network"
    res = subprocess.run(
        ["unshare", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
         "sh", "-c", script],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert res.returncode == 0 and out.is_file(), (res.stdout + res.stderr)[-6000:]
    result = json.loads(out.read_text())
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
        assert (root / "store/work/members" / name).is_dir()
    print(f"cluster up in {result['cluster_seconds']:.1f} s, flow {result['flow_seconds']:.1f} s")


def test_ray_runner_refuses_boosting() -> None:
    text = tiny_params(train={"runner": "ray", "ensemble": "boosting"})
    import yaml

    with pytest.raises(ConfigError, match="train.runner: ray trains bagged members"):
        parse_params(yaml.safe_load(text))


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
    store = LocalStore(tmp_path / "store")
    remote.stage_data(store, driver, data.sha256)
    storage = StorageConfig(url=str(tmp_path / "store")).model_dump(mode="json")
    dump = params.model_dump(mode="json")
    first = remote.train_elsewhere("a", dump, storage, data.sha256, threads=1)
    keys = {k: (tmp_path / "store" / k).stat().st_mtime_ns for k in store.list_keys("work/")}
    second = remote.train_elsewhere("a", dump, storage, data.sha256, threads=1)
    assert {k: v for k, v in first.items() if k != "trained_on"} == {
        k: v for k, v in second.items() if k != "trained_on"
    }
    ckpt = [k for k in keys if k.endswith("generator_ema.safetensors")]
    assert ckpt and all((tmp_path / "store" / k).stat().st_mtime_ns == keys[k] for k in ckpt)
    remote.fetch_member(store, driver, "a", first)  # and the driver picks it up, checked
    assert json.loads((driver.member("a") / "card.json").read_text())["steps"] == 30
    weights = tmp_path / "store" / ckpt[0]
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
    store = LocalStore(tmp_path / "store")
    remote.stage_data(store, driver, data.sha256)
    storage = StorageConfig(url=str(tmp_path / "store")).model_dump(mode="json")
    dump = params.model_dump(mode="json")
    outcome: list[BaseException] = []

    def node() -> None:
        try:
            remote.train_elsewhere("a", dump, storage, data.sha256, 1, stop_token="run1")
        except BaseException as exc:  # what the task ends with
            outcome.append(exc)

    def uploaded_step() -> int:
        states = list((tmp_path / "store/work/members/a").glob("*/checkpoint/state.json"))
        listed = [s for s in states if (s.parent.parent / "files.json").is_file()]
        return json.loads(listed[0].read_text())["step"] if listed else 0

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
