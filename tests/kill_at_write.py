"""Run an `ensgan` command and stop it, as kill -9 would, at a write under a project directory.

    python -m tests.kill_at_write MODE ROOT ensgan-args...

A write is what the file system sees change: a file opened for writing, a rename or replace,
a removal, a directory made or removed; only paths under ROOT count (not caches or /tmp).
MODE is one of:
- `kill:K`: SIGKILL this process at its K-th write, before the write happens;
- `snapshot:DIR`: at every write, before it happens, copy ROOT to DIR/K: what a kill at that
  write would leave on disk (a killed process loses nothing the kernel already has), so that
  one run gives the state after a kill at each of its writes;
- `run`: neither.
The writes are printed to stderr (`WRITE K EVENT PATH`), and their number last (`WRITES n`).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}


def _is_write(event: str, args: tuple) -> bool:
    if event == "open":
        mode, flags = args[1], args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & WRITE_FLAGS)
    return event in EVENTS


def main() -> None:
    mode, root = sys.argv[1], os.path.realpath(sys.argv[2])
    args = sys.argv[3:]
    kill_at = int(mode[5:]) if mode.startswith("kill:") else 0
    snapshots = mode[9:] if mode.startswith("snapshot:") else None
    count, copying = 0, False

    def hook(event: str, hook_args: tuple) -> None:
        nonlocal count, copying
        if copying or not hook_args or not _is_write(event, hook_args):
            return
        path = hook_args[0]
        if not isinstance(path, str | bytes | os.PathLike):
            return
        full = os.path.realpath(os.fsdecode(path))
        if full != root and not full.startswith(root + os.sep):
            return
        count += 1
        print(f"WRITE {count} {event} {os.path.relpath(full, root)}", file=sys.stderr)
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if snapshots:
            copying = True
            try:
                shutil.copytree(root, os.path.join(snapshots, str(count)), symlinks=True)
            finally:
                copying = False

    os.chdir(root)
    sys.addaudithook(hook)
    from ensgan.cli import app

    try:
        app(args, standalone_mode=False)
    finally:
        print(f"WRITES {count}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
