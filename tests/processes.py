"""Real ensgan processes for the tests of children and stopping: a tiny project prepared to
train long, started, watched and killed."""

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

from tests.helpers import REPO, write_tiny_project

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
    root: Path, log: IO[str], *args: str, environ: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen:
    """`ensgan ARGS` in `root`, its output to `log` (a pipe could fill and block it)."""
    cmd, where = [ENSGAN, *args], environ or env()
    return subprocess.Popen(cmd, cwd=root, env=where, stdout=log, stderr=log, **popen)


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
