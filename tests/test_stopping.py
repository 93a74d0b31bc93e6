"""SIGTERM and SIGINT (Ctrl-C) stop a run at its members' next step, checkpointed, and the
next run resumes.

`ensgan train` runs as a real process on a tiny project set to train far longer than the test
waits; SIGTERM must end it, and what it leaves must resume without a lost or repeated row.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.processes import (
    MEMBERS,
    alive,
    all_checkpointed,
    children,
    ensgan,
    prepared,
    rows,
    set_steps,
    start,
    wait_for,
)


def _logged(root: Path, name: str) -> bool:
    try:
        return bool(rows(root, name))
    except (OSError, KeyError):
        return False


pytestmark = pytest.mark.e2e  # real training processes, started and stopped


def stopped_as_a_stop(
    out: str, status: int, how: signal.Signals, started: list[int], root: Path
) -> dict[str, int]:
    """What a stopped command leaves: the signal's status, the stop's one line and no other
    error, every process it started gone, and each member checkpointed (the steps reached)."""
    assert status == 128 + how, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    stop = f"error: stopped ({how.name}); the next run resumes from the checkpoints"
    assert errors == [stop], out[-3000:]
    wait_for("what it started to exit", lambda: not any(map(alive, started)), 60)
    reached = all_checkpointed(root)()
    assert reached, out[-3000:]
    return reached


def test_sigterm_stops_train_at_the_next_step_and_the_next_train_resumes(tmp_path: Path) -> None:
    root = prepared(tmp_path / "p")
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = start(root, log, "train")
        try:
            wait_for("both members' first checkpoints", all_checkpointed(root), 600)
            members = children(first.pid)
            first.send_signal(signal.SIGTERM)
            status = first.wait(timeout=120)  # not a measure: unstopped, it would train on
        finally:
            first.kill()
            first.wait()
    out = log_path.read_text()
    assert status == 128 + signal.SIGTERM, out[-3000:]
    assert "error: stopped (SIGTERM); the next run resumes from the checkpoints" in out
    wait_for("the stopped run's member processes to exit", lambda: not any(map(alive, members)), 60)
    reached = all_checkpointed(root)()
    assert reached, out[-3000:]
    for name, step in reached.items():
        assert not (root / f"models/members/{name}/card.json").exists()
        assert rows(root, name) == list(range(5, step + 1, 5)), name  # flushed to the stop
    # Resumed, not retrained: a member trained afresh would have its grids removed first.
    grids = {n: root / f"models/members/{n}/grids/step-{s:07d}.png" for n, s in reached.items()}
    before = {n: g.stat().st_mtime_ns for n, g in grids.items()}
    steps = (max(reached.values()) // 5 + 3) * 5
    set_steps(root, steps)
    res = ensgan(root, "train")
    assert res.returncode == 0, res.stderr[-3000:]
    for name in MEMBERS:
        assert grids[name].stat().st_mtime_ns == before[name], f"{name} was not resumed"
        card = json.loads((root / f"models/members/{name}/card.json").read_text())
        assert card["steps"] == steps
        assert rows(root, name) == list(range(5, steps + 1, 5)), name


def test_ctrl_c_stops_train_at_the_next_step_in_one_line_with_status_130(tmp_path: Path) -> None:
    """A terminal's Ctrl-C: SIGINT to the whole foreground process group, the run and each of
    its member processes at once. Each member checkpoints the step it reached (no step lost
    back to the last periodic checkpoint), and the run prints one line, no traceback."""
    root = prepared(
        tmp_path / "p", checkpoint_every=10_000
    )  # no periodic checkpoint to fall back on
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        run = start(root, log, "train", process_group=0)
        try:
            wait_for(
                "both members' first loss rows", lambda: all(_logged(root, n) for n in MEMBERS), 600
            )
            members = children(run.pid)
            os.killpg(run.pid, signal.SIGINT)
            status = run.wait(timeout=120)  # not a measure: unstopped, it would train on
        finally:
            run.kill()
            run.wait()
    out = log_path.read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    reached = stopped_as_a_stop(out, status, signal.SIGINT, members, root)
    for name, step in reached.items():
        assert step >= 5 and rows(root, name) == list(range(5, step + 1, 5)), name


def test_sigterm_outside_a_training_loop_stops_at_once_and_the_earlier_report_stands(
    tmp_path: Path,
) -> None:
    """A stop in a stage with no training loop to wait for (evaluate) raises where it lands:
    one line, status 143, the half-written staging copy removed, and the report of the
    evaluation before left exactly as it was (its files' bytes and mtimes)."""
    import yaml

    root = prepared(tmp_path / "p")
    set_steps(root, 10)
    for stage in ("train", "stack", "evaluate"):
        res = ensgan(root, stage)
        assert res.returncode == 0, res.stderr[-3000:]
    reports = root / "reports"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in reports.rglob("*") if p.is_file()}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["n_samples"] = 400_000  # far longer than the test waits
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    staging = root / ".ensgan-evaluate.partial"
    log_path = tmp_path / "evaluate.log"
    with open(log_path, "w") as log:
        proc = start(root, log, "evaluate")
        try:
            wait_for("evaluate's staging copy", staging.exists, 300)
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)  # not a measure: unstopped, it would evaluate on
        finally:
            proc.kill()
            proc.wait()
    out = log_path.read_text()
    assert status == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: stopped (SIGTERM); the next run resumes from the checkpoints"], out
    assert not staging.exists()
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in reports.rglob("*") if p.is_file()}
    assert after == before


def test_sigterm_stops_ensgan_run_at_the_next_step_and_nothing_it_started_outlives_it(
    tmp_path: Path,
) -> None:
    """`ensgan run`: the Prefect flow, its temporary server and its local member processes.
    Inside the flow Prefect's engine has a SIGTERM handler of its own (it raises Prefect's
    TerminationSignal, not our stop); the run still ends as a stop: one line, status 143,
    every member checkpointed at the step it reached, and no process it started left."""
    root = prepared(tmp_path / "p")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        run = start(root, log, "run")
        try:
            wait_for("both members' first checkpoints", all_checkpointed(root), 900)
            started = children(run.pid)  # the members and the temporary server
            run.send_signal(signal.SIGTERM)
            status = run.wait(timeout=180)  # not a measure: unstopped, it would train on
        finally:
            run.kill()
            run.wait()
    reached = stopped_as_a_stop(log_path.read_text(), status, signal.SIGTERM, started, root)
    for name, step in reached.items():
        assert not (root / f"models/members/{name}/card.json").exists()
        assert rows(root, name) == list(range(5, step + 1, 5)), name  # flushed to the stop
