"""Writing files and directories so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from ensgan.errors import BusyError

LOCK_FILE = ".ensgan.lock"
# Shared by every member process while it lives, whoever holds LOCK_FILE: a run killed with
# kill -9 frees LOCK_FILE at once, while its member processes stop (children.py).
WRITERS_FILE = ".ensgan.writers.lock"


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


def file_sha256(path: Path) -> str:
    """A file's sha256, read in blocks (the one digest every check of a file uses)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json(path: Path, obj: object) -> Path:
    """Write `obj` as JSON atomically; a file that already says exactly this is left alone
    (a rerun that changes nothing rewrites nothing: mtimes and DVC's hash cache stay)."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    with suppress(OSError, UnicodeDecodeError):
        if Path(path).read_text() == text:
            return Path(path)
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


def _journal(root: Path, name: str) -> tuple[Path, Path]:
    """The staging tree and the commit journal of one multi-output step, `name`."""
    return Path(root) / f".ensgan-{name}.partial", Path(root) / f".ensgan-{name}.commit"


@contextmanager
def staged_outputs(root: Path, name: str, outputs: list[str]) -> Iterator[Path]:
    """Write a step's several outputs together, so that they switch from old to new as one.

    Yields a staging directory that mirrors `root`: the caller writes each of `outputs`
    (root-relative files or directories) under it. On success a journal naming them is written
    (the commit point), then each is moved into place (a directory is replaced whole) and the
    journal removed. Killed before the journal, the old outputs stand and the staging tree is
    cleaned at the next start; killed after it, the next start (`recover_outputs`) finishes
    the moves: a reader after recovery sees all old or all new outputs, never a mix.
    """
    root = Path(root)
    recover_outputs(root)
    stage, journal = _journal(root, name)
    stage.mkdir()
    try:
        yield stage
        missing = [o for o in outputs if not (stage / o).exists()]
        if missing:
            raise RuntimeError(f"{name} did not write {missing}")  # a bug, not a user error
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    text = json.dumps({"outputs": outputs})
    atomic_write(journal, lambda tmp: _write_synced(tmp, text))  # the commit point
    _apply(root, stage, journal)


def _write_synced(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _apply(root: Path, stage: Path, journal: Path) -> None:
    """Move every journalled output into place; safe to repeat after a crash part-way."""
    for rel in json.loads(journal.read_text())["outputs"]:
        src, dst = stage / rel, root / rel
        old = _aside(dst, "old")
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and dst.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dst, old)
            os.replace(src, dst)  # a file replaces a file in one step
        shutil.rmtree(old, ignore_errors=True)
    journal.unlink()
    shutil.rmtree(stage, ignore_errors=True)


def recover_outputs(root: Path) -> list[str]:
    """Finish (journal written) or discard (no journal) every step a crash interrupted.
    Called at the start of every stage; returns what it did, one line each, for the log."""
    done = []
    for stage in sorted(Path(root).glob(".ensgan-*.partial")):
        name = stage.name[len(".ensgan-") : -len(".partial")]
        journal = _journal(root, name)[1]
        if journal.exists():
            _apply(Path(root), stage, journal)
            done.append(f"finished the interrupted {name}: its outputs are now all new")
        else:
            shutil.rmtree(stage, ignore_errors=True)
            done.append(f"discarded the interrupted {name}: its outputs are still the old ones")
    for journal in Path(root).glob(".ensgan-*.commit"):  # staging already gone: moves done
        journal.unlink()
    for tmp in Path(root).glob("..ensgan-*.commit.*.tmp"):  # a journal killed mid-write
        tmp.unlink()
    for top, deep in OUTPUT_TOPS:
        done += _sweep(Path(root) / top, deep)
    return done


# Where stages write, and whether below it too: data/ holds the user's own files, so only its
# top level (data/prepared's swap); never the store, which other projects may share.
OUTPUT_TOPS = (("data", False), ("models", True), ("reports", True), ("outputs", True))
_TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # atomic_write's temp names


def _sweep(top: Path, deep: bool) -> list[str]:
    """Undo what a kill left of single swaps under `top`: a torn atomic_dir swap is put back
    (recover_dir), a half-written work directory or temp file is removed."""
    done = []
    if not top.is_dir():
        return done
    found = top.rglob(".*") if deep else top.glob(".*")
    for path in sorted(found, key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # inside something removed above
        name = path.name
        if name.endswith(".old") and path.is_dir():
            target = path.with_name(name[1 : -len(".old")])
            if target.exists():  # the swap had finished: only the old copy was left
                shutil.rmtree(path)
                done.append(f"removed {path}: the replaced copy of {target}")
            else:
                recover_dir(target)
                done.append(f"put {target} back: a swap was interrupted between its renames")
        elif name.endswith(".partial") and path.is_dir():
            shutil.rmtree(path)
            done.append(f"removed {path}: a write interrupted before it finished")
        elif _TMP_FILE.match(name) and path.is_file():
            path.unlink()
            done.append(f"removed {path}: a temp file of an interrupted write")
    return done


@contextmanager
def exclusive(
    lock_file: Path, busy: str, check: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold `lock_file` (an OS file lock, released if the process dies) for the block, or raise
    BusyError(`busy`) at once if another process holds it; `check()` runs once it is held. The
    file stays: removing a lock file lets a third process lock a new one while a second still
    holds the old."""
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BusyError(busy) from None
    try:
        if check is not None:
            check()
        yield
    finally:
        lock.release()


def project_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """One writer per project directory: a `dvc repro` and a nightly flow in the same checkout
    would otherwise delete each other's half-written outputs. Refused too while a member
    process of an earlier run still writes there (its parent killed: `hold_writers_lock`)."""
    return exclusive(
        Path(root) / LOCK_FILE,
        f"another ensgan run is writing to {Path(root).resolve()} (lock {LOCK_FILE}); "
        "wait for it to finish",
        check=lambda: _no_writers_left(Path(root)),
    )


def _no_writers_left(root: Path) -> None:
    """Raise BusyError while a member process holds the writers lock."""
    fd = os.open(root / WRITERS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BusyError(
            f"member processes of an earlier ensgan run are still writing to {root.resolve()} "
            f"(they hold {WRITERS_FILE}; their parent was killed): they save a checkpoint "
            "at their next step and exit: run the command again then"
        ) from None
    finally:
        os.close(fd)  # and with it the probe's lock


def hold_writers_lock(root: Path) -> int:
    """In a member process: share the writers lock of `root` until the process exits (the
    descriptor stays open), so that a new run refuses while this one may write."""
    fd = os.open(Path(root) / WRITERS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # a new run is probing: this process's parent is gone
        os.close(fd)
        raise BusyError(f"another ensgan run holds {Path(root) / WRITERS_FILE}") from None
    return fd
