"""No member process outlives its run, and none writes while a new run starts.

`ensgan train` runs as a real process on a tiny project and is killed as the OOM killer or a
user would, with kill -9; a second `ensgan train` starts at once. The helpers here are shared
with tests/test_stopping.py and tests/test_server.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import (
    MEMBERS,
    alive,
    all_checkpointed,
    children,
    ensgan,
    env,
    prepared,
    rows,
    set_steps,
    start,
    wait_for,
)


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


def test_a_cleared_stop_reaches_no_later_member_process() -> None:
    """A process that runs one run after another (a test worker, a Ray worker) clears the first
    run's stop: the event its later member processes inherit must be clear too."""
    from ensgan import stopping

    event = stopping.shared_event()
    stopping.request("first run over")
    assert event.is_set() and stopping.requested()
    stopping.clear()
    assert not stopping.requested() and not stopping.shared_event().is_set()
