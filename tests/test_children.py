"""No member process outlives its run, and none writes while a new run starts.

`ensgan train` runs as a real process on a tiny project and is killed as the OOM killer or a
user would, with kill -9; a second `ensgan train` starts at once. The helpers here are shared
with tests/test_stopping.py and tests/test_server.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.conftest import REPO, write_tiny_project

ENSGAN = str(Path(sys.executable).with_name("ensgan"))
# Training far longer than any test waits: a run is stopped or killed part-way.
LONG = {"steps": 100_000, "checkpoint_every": 5, "log_every": 5, "workers": 2}
MEMBERS = {"a", "b"}  # the tiny project's


def prepared(root: Path, **train: Any) -> Path:
    """A tiny project with `train` params and its data prepared (in this process)."""
    from ensgan.config import load_params
    from ensgan.layout import Layout
    from ensgan.pipeline import prepare

    write_tiny_project(root, train={**LONG, **train})
    prepare.run(load_params(root / "params.yaml"), Layout(root))
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start(
    root: Path, log: IO[str], *args: str, environ: dict[str, str] | None = None
) -> subprocess.Popen:
    """`ensgan ARGS` in `root`, its output to `log` (a pipe could fill and block it)."""
    cmd, where = [ENSGAN, *args], environ or env()
    return subprocess.Popen(cmd, cwd=root, env=where, stdout=log, stderr=log)


def ensgan(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [ENSGAN, *args]
    return subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True, timeout=900)


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def checkpoints(root: Path) -> dict[str, int]:
    """Each member's checkpointed step."""
    out = {}
    for name in MEMBERS:
        state = root / "models" / "members" / name / "checkpoint" / "state.json"
        try:
            out[name] = json.loads(state.read_text())["step"]
        except (OSError, ValueError):  # none yet, or swapped in between two reads
            continue
    return out


def all_checkpointed(root: Path) -> Callable[[], dict[str, int] | None]:
    """A check for wait_for: every member's checkpointed step, once each has one."""

    def check() -> dict[str, int] | None:
        found = checkpoints(root)
        return found if found.keys() == MEMBERS else None

    return check


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rows(root: Path, name: str) -> list[int]:
    with open(root / f"models/members/{name}/losses.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def set_steps(root: Path, steps: int) -> None:
    """Change train.steps (not part of a member's identity: a checkpoint up to it resumes)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["steps"] = steps
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_run_refuses_while_a_member_process_holds_the_writers_lock(tmp_path: Path) -> None:
    """What a member process of a killed run holds keeps a new run out until it exits."""
    from ensgan.errors import BusyError
    from ensgan.io.files import project_lock

    code = (
        "import sys, time; from ensgan.io.files import hold_writers_lock\n"
        "hold_writers_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)"
    )
    cmd = [sys.executable, "-c", code, str(tmp_path)]
    holder = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(BusyError, match=r"still writing to .*\.ensgan\.writers\.lock")
        with refused, project_lock(tmp_path):
            pytest.fail("the lock was given while a member process held the writers lock")
    finally:
        holder.kill()
        holder.wait()
    with project_lock(tmp_path):  # free once that process is gone
        pass


@pytest.mark.e2e
def test_kill_9_of_train_leaves_no_writer_and_the_next_train_loses_no_row(tmp_path: Path) -> None:
    """kill -9 of `ensgan train` mid-training, a second `ensgan train` at once: it refuses
    while the killed run's member processes still write, or finds none; they are gone soon,
    and the members that then finish have every row of their loss logs."""
    root = prepared(tmp_path / "p")
    with open(tmp_path / "first.log", "w") as log:
        first = start(root, log, "train")
        try:
            reached = wait_for("both members' first checkpoints", all_checkpointed(root), 600)
            members = children(first.pid)
        finally:
            first.kill()
            first.wait()
    assert len(members) >= 2, members
    steps = (max(reached.values()) // 5 + 4) * 5  # a little further than the killed run got
    set_steps(root, steps)
    second = ensgan(root, "train")
    if second.returncode != 0:  # member processes were still writing: refused, nothing done
        assert second.returncode == 2, second.stderr[-3000:]
        assert "still writing" in second.stderr and ".ensgan.writers.lock" in second.stderr
    wait_for("the killed run's member processes to exit", lambda: not any(map(alive, members)), 120)
    if second.returncode != 0:
        second = ensgan(root, "train")
        assert second.returncode == 0, second.stderr[-3000:]
    for name in MEMBERS:
        card = json.loads((root / f"models/members/{name}/card.json").read_text())
        assert card["steps"] == steps
        assert rows(root, name) == list(range(5, steps + 1, 5)), name
