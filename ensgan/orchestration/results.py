"""The flow's persisted task results: plain JSON, and nothing else is ever read back.

Prefect decodes a result record with the serializer named *in the record*: a pickle record
(or a JSON one naming an object decoder, or another `jsonlib`, which Prefect imports) placed
under a current cache key would be unpickled or imported on the next cache check. So before
Prefect looks a key up, `guard_cached_record` reads the record there itself, as bytes: one that
is not plain JSON is moved aside (local storage; kept, never deleted) so that the task runs
afresh and writes a clean record, or, on other storage, stops the task with a message.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from prefect.filesystems import LocalFileSystem
from prefect.results import get_default_result_storage
from prefect.serializers import JSONSerializer

from ensgan.errors import StorageError

log = logging.getLogger(__name__)

# Prefect's default pickles results, and its default JSON decoder imports any class a file names.
PLAIN_JSON = JSONSerializer(object_encoder=None, object_decoder=None)


class RefusedRecord(StorageError):
    """A result record that ensgan did not write: not plain JSON, or naming code to run."""


def check_plain_json(content: bytes, where: str) -> bytes:
    """Return `content` if it is a result record serialized as `PLAIN_JSON`; else raise."""
    try:
        record = json.loads(content)
        serializer = record["metadata"]["serializer"]
        json.loads(record["result"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RefusedRecord(f"{where} is not a plain-JSON result record ({exc})") from None
    plain = {"type": "json", "jsonlib": "json"}
    extras = ("object_encoder", "object_decoder", "dumps_kwargs", "loads_kwargs")
    if any(serializer.get(k) != v for k, v in plain.items()) or any(
        serializer.get(k) for k in extras
    ):
        raise RefusedRecord(f"{where} names a serializer ensgan does not write: {serializer}")
    return content


def guard_cached_record(key: str) -> None:
    """Make sure Prefect finds either nothing or a plain-JSON record under `key`."""
    storage = get_default_result_storage(_sync=True)
    if isinstance(storage, LocalFileSystem):
        guard_local_record(Path(storage._resolve_path(key)))
        return
    try:
        content = storage.read_path(key, _sync=True)
    except Exception:  # noqa: BLE001 - missing, in whatever way this storage says so
        return
    check_plain_json(content, f"result record {key!r} in {type(storage).__name__}")


def guard_local_record(path: Path) -> None:
    """A local record that is not plain JSON is moved aside (kept, never read or deleted)."""
    if not path.is_file():
        return
    try:
        check_plain_json(path.read_bytes(), str(path))
    except RefusedRecord as exc:
        aside = path.with_name(f"{path.name}.refused-{time.time_ns()}")
        path.rename(aside)
        log.warning("%s; moved aside to %s, and the task runs afresh", exc, aside)
