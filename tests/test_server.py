"""The temporary Prefect server of `ensgan run` ends with the run, and the run with it.

Real servers, started by real processes (shared_api, or `ensgan run` itself), killed with
kill -9: the server must not outlive what started it, and a run whose server died must end
with one line rather than retry a server that is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.processes import (
    alive,
    all_checkpointed,
    children,
    env,
    prepared,
    start,
    wait_for,
)

pytestmark = pytest.mark.e2e  # a Prefect server per test

SERVE = (
    "import time\nfrom ensgan.orchestration.runners import shared_api\n"
    "with shared_api():\n    print('up', flush=True)\n    time.sleep(600)\n"
)


def server_env(tmp_path: Path) -> dict[str, str]:
    """No Prefect API configured (shared_api starts its own), and a Prefect home of its own."""
    out = {**env(), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    out.pop("PREFECT_API_URL", None)
    return out


def server_of(pid: int) -> int:
    """The temporary server among the children of `pid`."""
    lines = {c: Path(f"/proc/{c}/cmdline").read_bytes() for c in children(pid)}
    found = [c for c, line in lines.items() if b"uvicorn" in line]
    assert len(found) == 1, f"not one server among the children of {pid}: {lines}"
    return found[0]


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """A process inside shared_api (which started a server): it, the server's pid, its log."""
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        cmd = [sys.executable, "-c", SERVE]
        proc = subprocess.Popen(
            cmd, env=server_env(tmp_path), stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert proc.stdout.readline().strip() == "up", log.read_text()[-3000:]
        yield proc, server_of(proc.pid), log
    finally:
        proc.kill()
        proc.wait()


def test_the_temporary_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    with serving(tmp_path) as (proc, server, _):
        proc.kill()
        proc.wait()
        wait_for("the server to exit after its parent", lambda: not alive(server), 60)


def test_a_process_whose_server_died_ends_with_one_line(tmp_path: Path) -> None:
    with serving(tmp_path) as (proc, server, log):
        os.kill(server, signal.SIGKILL)
        status = proc.wait(timeout=120)  # not a measure: otherwise it sleeps on
    assert status == 1
    line = f"error: the temporary Prefect server (pid {server}) exited with status -9"
    assert line in log.read_text()


def test_ensgan_run_whose_server_died_stops_its_members_and_exits(tmp_path: Path) -> None:
    """`ensgan run` mid-training when its server is killed: the member processes save a
    checkpoint and exit, and so does the run, with one line; no member is left finished or
    half-written."""
    root = prepared(tmp_path / "p")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        run = start(root, log, "run", environ=server_env(tmp_path))
        try:
            wait_for("both members' first checkpoints", all_checkpointed(root), 900)
            server, members = server_of(run.pid), children(run.pid)
            os.kill(server, signal.SIGKILL)
            status = run.wait(timeout=300)  # not a measure: otherwise it trains on
        finally:
            run.kill()
            run.wait()
    out = log_path.read_text()
    assert status == 1, out[-3000:]
    assert f"error: the temporary Prefect server (pid {server}) exited with status -9" in out
    wait_for("the run's member processes to exit", lambda: not any(map(alive, members)), 60)
    for name, step in all_checkpointed(root)().items():
        assert step >= 5 and not (root / f"models/members/{name}/card.json").exists()
