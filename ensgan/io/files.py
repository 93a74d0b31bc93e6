"""Writing files and directories so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ensgan.errors import BusyError

LOCK_FILE = ".ensgan.lock"


def atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then os.replace it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, created by `write` itself: the file gets the umask's mode (mkstemp's 0600
    # would hide published files from other users of a shared store).
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
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
def atomic_dir(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty work directory beside `path`; on success it becomes `path` in one rename.

    An error inside the block (or during the swap) leaves `path` as it was: the work directory
    is removed and a previous `path` put back. With `replace=False` an existing `path` is an
    error rather than replaced. With `replace=True` the old one is moved aside and deleted only
    after the swap; if a hard crash hits between the two renames, `recover_dir` (called here
    and by every card reader) puts it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    work, old = _aside(path, "partial"), _aside(path, "old")
    shutil.rmtree(work, ignore_errors=True)  # leftover of a crashed write of this same path
    work.mkdir()
    try:
        yield work
        if path.exists():
            if not replace:
                raise FileExistsError(
                    errno.EEXIST, "already there; refusing to overwrite it", str(path)
                )
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(work, path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        recover_dir(path)  # interrupted between the renames: the old one comes back
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: Path) -> None:
    """Undo a swap torn between its two renames: the old directory comes back."""
    path, old = Path(path), _aside(Path(path), "old")
    if not path.exists() and old.exists():
        os.replace(old, path)


def _aside(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}")


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
