"""No member task outlives its driver on a real Ray cluster: for tests/test_ray.py, which runs
this in namespaces of its own as tests/ray_cluster.py describes, from the repository root:

    python -m tests.ray_stop PROJECT OUT.json

One cluster (tests/ray_cluster.py's) and three drivers in turn, each `ensgan run` on PROJECT
(train.runner: ray, trained far longer than this waits). Each driver is awaited until every
member has uploaded a checkpoint past the step the driver before it left, and is then sent
SIGTERM, SIGINT and, last, SIGKILL. After each: how the driver ended, when the member tasks
were gone (no process titled as a running member task in this PID namespace), when the
store's member files last changed, what the store holds, and whether the driver's members
resumed from the checkpoints the last one left; and whether each member's upload is whole
(what the next run would resume from). Written to OUT.json for the test to judge: a bound
passed is recorded as None, not raised, so that the test names what failed.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.helpers import stored_text
from tests.processes import MEMBERS, alive, start
from tests.ray_cluster import local_cluster

TASK_TITLE = "ray::train-member-ray"  # a Ray worker's title while it runs a member task
BOUND_SECONDS = 120.0  # generous: waits end here, recorded as None, not as a measure
START_SECONDS = 400.0  # a driver's flow up to its members' first uploads (once: imports)
QUIET_SECONDS = 10.0  # the store unchanged this long with no task left: nothing writes
POLL_SECONDS = 0.2
STOPPED = re.compile(r"member (\w+) stopped at step (\d+) of")
T = TypeVar("T")


def _until(check: Callable[[], T], timeout: float) -> tuple[T | None, float | None]:
    """Poll `check` until it returns something true: that and the seconds it took; (None,
    None) after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if value := check():
            return value, time.monotonic() - t0
        time.sleep(POLL_SECONDS)
    return None, None


def member_folders(project: Path) -> dict[str, Path]:
    """Each member's upload in the work store (store-work/members/NAME/FINGERPRINT/, with its
    files.json: ensgan/orchestration/remote.py); one fingerprint each, as train.steps is not
    part of it."""
    found = {}
    for listing in (project / "store-work/members").glob("*/*/files.json"):
        found[listing.parent.parent.name] = listing.parent
    return found


def uploaded_steps(project: Path) -> dict[str, int]:
    """Each member's checkpointed step in the store."""
    steps = {}
    for name, folder in member_folders(project).items():
        try:
            steps[name] = json.loads(stored_text(folder, "checkpoint/state.json"))["step"]
        except (OSError, ValueError, KeyError):  # swapped in between two reads
            continue
    return steps


def losses(project: Path) -> dict[str, str]:
    """Each member's loss log in the store, as text."""
    return {n: stored_text(f, "losses.csv") for n, f in member_folders(project).items()}


def last_rows(project: Path) -> dict[str, int]:
    """The step of each member's last loss-log row in the store (with log_every 1: the last
    step it trained before the upload)."""
    return {n: int(text.splitlines()[-1].split(",")[0]) for n, text in losses(project).items()}


def snapshot(project: Path) -> dict[str, tuple[int, int]]:
    """Every member file in the store, its size and modification time: what a writer changes."""
    out = {}
    for path in (project / "store-work/members").rglob("*"):
        try:
            stat = path.stat()
        except OSError:  # replaced in between
            continue
        out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def member_tasks() -> dict[int, str]:
    """The processes of this PID namespace running a member task, by pid, with their titles."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if title.startswith(TASK_TITLE) and alive(pid):
            found[pid] = title
    return found


def _past(project: Path, reached: dict[str, int]) -> dict[str, int] | None:
    """Every member's uploaded step, once each is past the one in `reached`."""
    steps = uploaded_steps(project)
    return steps if all(steps.get(n, 0) > reached.get(n, 0) for n in MEMBERS) else None


def _observe(project: Path, driver: Any, how: signal.Signals) -> dict:
    """Send `how` to the training driver and watch, from then on and all at once: the driver
    end, its member tasks end, and the store's member files change until they settle
    (unchanged for QUIET_SECONDS once the rest has happened). Seconds from the signal; None
    for what had not happened by BOUND_SECONDS."""
    tasks, store = member_tasks(), snapshot(project)
    sent = time.monotonic()
    driver.send_signal(how)
    ended: dict[str, float | None] = {"exit": None, "tasks_gone": None, "settled": None}
    changed = sent
    while time.monotonic() - sent < BOUND_SECONDS + QUIET_SECONDS:
        time.sleep(POLL_SECONDS)
        if ended["exit"] is None and driver.poll() is not None:
            ended["exit"] = time.monotonic() - sent
        if ended["tasks_gone"] is None and not member_tasks() and not any(map(alive, tasks)):
            ended["tasks_gone"] = time.monotonic() - sent
        if (now := snapshot(project)) != store:
            store, changed = now, time.monotonic()
        over = ended["exit"] is not None and ended["tasks_gone"] is not None
        if over and time.monotonic() - changed >= QUIET_SECONDS:
            ended["settled"] = changed - sent
            break
    return {
        "tasks_at_signal": sorted(tasks.values()),
        "status": driver.poll(),
        "exit_seconds": ended["exit"],
        "tasks_gone_seconds": ended["tasks_gone"],
        "store_last_changed_seconds": ended["settled"],
        "tasks_left": sorted(member_tasks().values()),
        "intact": intact(project),
    }


def intact(project: Path) -> dict[str, bool]:
    """Whether each member's upload in the store downloads whole, every file its files.json
    lists, and checks: what the next run resumes from (an upload cut short does not)."""
    from ensgan.errors import BatchError
    from ensgan.io.storage import LocalStore
    from ensgan.orchestration.remote import download_tree

    store, out = LocalStore(project / "store-work"), {}
    for name, folder in member_folders(project).items():
        prefix = folder.relative_to(project / "store-work").as_posix() + "/"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out[name] = download_tree(store, prefix, Path(tmp) / name)
            except BatchError:
                out[name] = False
    return out


def phase(project: Path, how: signal.Signals, reached: dict[str, int], log_path: Path) -> dict:
    """One driver: started, awaited until each member has uploaded a step past `reached` (what
    the drivers before it left), then sent `how` and watched."""
    left = losses(project)  # a member resumed keeps these rows; one trained afresh rewrites them
    seen: dict[str, Any] = {"signal": how.name}
    with open(log_path, "w") as log:
        driver = start(project, log, "run")
        try:
            training, seconds = _until(
                lambda: _past(project, reached) or driver.poll() is not None, START_SECONDS
            )
            seen["training_seconds"] = seconds
            if not isinstance(training, dict):  # the driver ended, or never got there
                seen["failed"] = f"no upload past {reached} (driver status {driver.poll()})"
                return seen
            now = losses(project)
            seen["resumed"] = {n: now[n].startswith(text) for n, text in left.items()}
            seen.update(_observe(project, driver, how))
        finally:
            if driver.poll() is None:
                driver.kill()
            driver.wait()
    out = log_path.read_text(errors="replace")
    seen["stopped_at"] = {m[1]: int(m[2]) for m in STOPPED.finditer(out)}
    seen["errors"] = [line for line in out.splitlines() if line.startswith("error:")]
    seen["uploaded"] = uploaded_steps(project)
    seen["last_rows"] = last_rows(project)
    seen["log_tail"] = out[-4000:]
    return seen


def main(project: Path, out: Path) -> None:
    t0 = time.monotonic()
    with local_cluster():  # RAY_ADDRESS and PREFECT_API_URL: what each driver inherits
        seen: dict[str, Any] = {"cluster_seconds": time.monotonic() - t0, "phases": []}
        reached = {n: 0 for n in MEMBERS}
        for how in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            result = phase(project, how, reached, out.with_name(f"driver-{how.name}.log"))
            seen["phases"].append(result)
            if "failed" in result:
                break
            reached = result["uploaded"]
    out.write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
