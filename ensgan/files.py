"""Writing files so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = ".ensgan.lock"


class BusyError(RuntimeError):
    """Another ensgan run is writing to the same project directory."""


def atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then os.replace it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: object) -> Path:
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextmanager
def project_lock(root: Path) -> Iterator[None]:
    """One writer per project directory: a `dvc repro` and a nightly flow in the same checkout
    would otherwise delete each other's half-written outputs."""
    lock = FileLock(Path(root) / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BusyError(
            f"another ensgan run is writing to {Path(root).resolve()} (lock {LOCK_FILE}); "
            "wait for it to finish"
        ) from None
    try:
        yield
    finally:
        lock.release()
