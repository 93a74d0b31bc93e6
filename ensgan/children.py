"""The processes a run starts end with it, even when it is killed with kill -9.

- A member process (a worker of `ensgan train`'s pool or of the flow's) watches its parent:
  a thread polls os.getppid(), and once the parent is gone (or has asked it to stop) it lets
  the training loop save its checkpoint at its next step, then exits without waiting to report
  to a parent, or a Prefect server, that may be gone. While it lives it shares the project's
  writers lock (ensgan/io/files.py), so a new run refuses to start until it has exited.
- The temporary Prefect server, a program of Prefect's that cannot host such a thread, is
  started through `python -m ensgan.children`, which sets Linux's parent-death signal
  (PR_SET_PDEATHSIG, kept across exec) and then runs the server in its place.

Why both: under kill -9 of the parent a process group does nothing (the signal goes to one
process), while PR_SET_PDEATHSIG and the polling thread both end the child. But the
parent-death signal fires when the *thread* that spawned the child ends, not its process,
and Prefect spawns its pool's workers from a resolver thread: the member processes poll.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensgan import stopping
from ensgan.errors import BusyError
from ensgan.io.files import hold_writers_lock

if TYPE_CHECKING:
    from ensgan.gan.placement import Placement

POLL_SECONDS = 0.5  # how often a member process looks for its parent
GRACE_SECONDS = 60.0  # for the step in progress and its checkpoint, once asked to stop
REPORT_SECONDS = 10.0  # then for reporting the stop to a parent still there
STOPPED_STATUS = 128 + signal.SIGTERM  # a member process ended before it began
PR_SET_PDEATHSIG = 1


def init_member_process(
    parent: int, root: str, stop: Any, placement: Placement | None = None, slots: Any = None
) -> None:
    """A pool's initializer, run in each member process before any task: on CUDA see only
    this worker's GPU (the next slot of `slots`, a shared counter: ensgan/gan/placement.py),
    take the writers lock, follow the parent's stop, stop on SIGTERM and SIGINT (a terminal's
    Ctrl-C reaches the members too), and end with the parent."""
    if placement is not None and slots is not None:
        with slots.get_lock():
            slot, slots.value = slots.value, slots.value + 1
        os.environ.update(placement.env(slot))
    try:
        hold_writers_lock(Path(root))
    except BusyError:
        if os.getppid() != parent:  # a new run is starting: this process's parent is gone
            os._exit(STOPPED_STATUS)
        raise
    if os.getppid() != parent:  # gone before the lock was taken: a new run may not see it
        os._exit(STOPPED_STATUS)
    stopping.inherit(stop)
    for signum in stopping.STOP_SIGNALS:
        signal.signal(signum, stopping.on_signal)
    watch = threading.Thread(target=_watch_parent, args=(parent,), name="ensgan-parent-watch")
    watch.daemon = True
    watch.start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent and not stopping.requested():
        time.sleep(POLL_SECONDS)
    orphaned = os.getppid() != parent
    if orphaned:
        stopping.request("the process that started this member exited")
    if stopping.looping():
        stopping.settled.wait(GRACE_SECONDS)
    if not orphaned:
        time.sleep(REPORT_SECONDS)
    os._exit(stopping.exit_status())  # every write is safe to interrupt (ensgan/io/files.py)


def die_with_parent(parent: int) -> None:
    """In this process: get SIGKILL when `parent` (the thread that started it) ends; exit at
    once if it already has. Linux only; elsewhere nothing."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(STOPPED_STATUS)


def launcher(command: list[str]) -> list[str]:
    """`command` run through `python -m ensgan.children`: it dies with this process's
    calling thread (which must outlive it)."""
    return [sys.executable, "-m", "ensgan.children", str(os.getpid()), "--", *command]


def main(argv: list[str]) -> None:
    """python -m ensgan.children PARENT_PID -- COMMAND...: COMMAND, dying with PARENT_PID."""
    parent, sep, command = int(argv[0]), argv[1], argv[2:]
    if sep != "--" or not command:
        raise SystemExit("usage: python -m ensgan.children PARENT_PID -- COMMAND...")
    die_with_parent(parent)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
