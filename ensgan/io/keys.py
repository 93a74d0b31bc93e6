"""Storage keys and download paths that cannot walk out of a root.

Keys are always relative, '/'-separated and free of '..', so a hostile or corrupt listing can
neither escape a store's root on disk nor a download directory. Their own module because both
stores (ensgan/io/storage.py, ensgan/io/s3.py) and the readers of a listing check them.
"""

from __future__ import annotations

from pathlib import Path

from ensgan.errors import StorageError


def safe_key(key: str) -> str:
    """Return `key` if it is a plain relative key; refuse anything that could walk out of a root."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise StorageError(
            f"unsafe storage key {key!r}: keys must be relative, '/'-separated, "
            "without empty, '.' or '..' segments or backslashes"
        )
    return key


def safe_prefix(prefix: str) -> str:
    """A listing prefix may end with '/' (or be empty); the rest must be a safe key."""
    if prefix:
        safe_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def safe_local_path(dest_dir: Path, relpath: str) -> Path:
    """Resolve `relpath` under `dest_dir`, refusing absolute paths and anything escaping it."""
    base = Path(dest_dir).resolve()
    if not relpath or "\\" in relpath or Path(relpath).is_absolute():
        raise StorageError(f"refusing to write {relpath!r}: not a relative path under {base}")
    target = (base / relpath).resolve()
    if target == base or not target.is_relative_to(base):
        raise StorageError(f"refusing to write {relpath!r}: it escapes {base}")
    return target
