"""Object storage behind one small interface: a local directory or an S3-compatible bucket.

Published batches must be readable by people and jobs that never saw this machine, so the
pipeline only ever talks to a `Store`; tests swap a temp directory, SeaweedFS or moto behind it.
Keys are checked by ensgan/io/keys.py, so a hostile or corrupt listing can neither escape the
store root on disk nor a download directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ensgan.errors import ConfigError, StorageError, short
from ensgan.io.files import atomic_write
from ensgan.io.keys import safe_key, safe_prefix

if TYPE_CHECKING:
    from ensgan.config import StorageConfig


@runtime_checkable
class Store(Protocol):
    url: str

    def put_file(self, local: Path, key: str) -> None: ...

    def get_file(self, key: str, local: Path) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object (nothing when there is none): only ever the work store's files
        (remote.py), an upload's objects that its newer listing no longer names."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes, from its listing or head (StorageError if none): a
        download can then refuse an object larger than it should be before fetching it."""
        ...


def _atomic_copy(src: Path, dest: Path) -> None:
    """Copy via a temp file in the destination directory, so readers never see a half file."""
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def _in_flight(name: str) -> bool:
    """atomic_write's temp files (".NAME.XXXX.tmp"), and older versions' (".tmp-NAME.ID")."""
    return name.startswith(".") and (name.endswith(".tmp") or name.startswith(".tmp-"))


class LocalStore:
    """A directory used as an object store (the default, and the offline fallback)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def put_file(self, local: Path, key: str) -> None:
        _atomic_copy(Path(local), self._path(key))

    def get_file(self, key: str, local: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"no object {key!r} in {self.url}")
        _atomic_copy(src, Path(local))

    def list_keys(self, prefix: str = "") -> list[str]:
        safe_prefix(prefix)
        if not self.root.is_dir():
            if self.root.exists() or any(p.is_file() for p in self.root.parents):
                raise StorageError(f"the store {self.root} is not a folder: name a folder")
            return []  # nothing published yet
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not _in_flight(p.name)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"no object {key!r} in {self.url}")
        return src.stat().st_size


# Environment variables that override storage's waits for one run (a consumer pulling with
# --store has no params.yaml to set them in).
ENV_OVERRIDES = {
    "connect_timeout": "ENSGAN_S3_CONNECT_TIMEOUT",
    "read_timeout": "ENSGAN_S3_READ_TIMEOUT",
    "max_attempts": "ENSGAN_S3_MAX_ATTEMPTS",
}


def with_env(cfg: StorageConfig) -> StorageConfig:
    """`cfg` with the ENV_OVERRIDES that are set, validated as params.yaml's values are."""
    from pydantic import ValidationError

    update: dict[str, float | int] = {}
    for field, var in ENV_OVERRIDES.items():
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        try:
            update[field] = int(raw) if field == "max_attempts" else float(raw)
        except ValueError:
            raise ConfigError(f"{var}={short(raw)} is not a number: unset it or fix it") from None
    if not update:
        return cfg
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **update})
    except ValidationError as err:
        field = str(err.errors(include_url=False)[0]["loc"][0])
        msg = err.errors(include_url=False)[0]["msg"]
        raise ConfigError(f"{ENV_OVERRIDES[field]}={update[field]}: {msg}") from None


def open_store(cfg: StorageConfig, root: Path = Path(".")) -> Store:
    """`s3://bucket/prefix` gives an S3Store; anything else a LocalStore under `root`."""
    if cfg.url.startswith("s3://"):
        from ensgan.io.s3 import S3Store  # boto3 is slow to import: only when needed

        cfg = with_env(cfg)
        bucket, _, prefix = cfg.url[len("s3://") :].partition("/")
        return S3Store(
            bucket,
            prefix,
            cfg.endpoint_url,
            cfg.region,
            max_attempts=cfg.max_attempts,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
        )
    return LocalStore(Path(root) / cfg.url)  # an absolute url replaces root
