"""The store's records, typed: a batch's batch.json, a gate verdict, the champion, a history row.

Nothing in a bucket is trusted: whoever can write there can write anything, with checksums to
match. So every record is read through its pydantic model (strict: a string is not a number,
a date must be a date), under a size bound and the JSON parser's depth bound, and fields that
end up in a command (a git commit, a DVC hash) or a path (a shard name) must be what they
claim. A bad record is one error naming its key, what is wrong and what to do; the readers
that list many records (ls, the history) skip or name it and go on.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    ValidationError,
)

from ensgan.errors import BatchError, RecordError

if TYPE_CHECKING:
    from ensgan.io.storage import Store

MIB = 1024 * 1024
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHARD_RE = re.compile(r"^shard-\d{5,}\.tar$")
PREFIX_RE = re.compile(r"^batches/\d{4}-\d{2}-\d{2}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}/$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
GIT_COMMIT_RE = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # SHA-1 or SHA-256 repositories
# What dvc.lock records of an out: an md5 (of a file, or of a folder's listing: `.dir`), an
# S3 ETag (an md5, `-PARTS` when uploaded in parts), or nothing.
DVC_HASH_RE = re.compile(r"^(?:[0-9a-f]{32}(?:\.dir|-\d{1,5})?)?$")


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"not {what}")
        return value

    return check


RunId = Annotated[str, AfterValidator(_matching(RUN_ID_RE, "a run_id"))]
ShardName = Annotated[str, AfterValidator(_matching(SHARD_RE, "a shard name (shard-NNNNN.tar)"))]
Prefix = Annotated[str, AfterValidator(_matching(PREFIX_RE, "a batch's key prefix"))]
Hex64 = Annotated[str, AfterValidator(_matching(HEX64_RE, "a sha256 (64 hex digits)"))]
GitCommit = Annotated[str, AfterValidator(_matching(GIT_COMMIT_RE, "a git commit (hex)"))]
DvcHash = Annotated[str, AfterValidator(_matching(DVC_HASH_RE, "a DVC hash (an md5)"))]
SPACE_KEY = "feature_space"  # the one text a gate row holds: its figures' feature space


def _figures(value: dict[str, float | str]) -> dict[str, float | str]:
    """Numbers, but for the feature space's name: a name where a figure should be, or a
    number where the space should be, is not read as one."""
    for key, v in value.items():
        if isinstance(v, str) != (key == SPACE_KEY):
            raise ValueError(f"{key[:40]!r} must be {'a name' if key == SPACE_KEY else 'a number'}")
    return value


# A metrics row as the gate keeps it (figures, n_images and the feature space they were in).
Figures = Annotated[dict[str, float | str], AfterValidator(_figures)]
Decision = Literal["promoted", "candidate"]


class Record(BaseModel):
    """A record read from the store. Unknown fields are kept, so a newer writer's still reads."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    label: ClassVar[str] = "record"
    fix: ClassVar[str] = "move it aside"
    error: ClassVar[type[Exception]] = RecordError
    max_bytes: ClassVar[int] = MIB


class Shard(Record):
    name: ShardName
    sha256: Hex64
    bytes: NonNegativeInt
    n_images: NonNegativeInt


class Lineage(Record):
    """Where a batch came from (ensgan/lineage.py); what `batches show` turns into commands."""

    git_commit: GitCommit | None = None
    git_dirty: bool | None = None
    dvc_lock_sha256: Hex64 | None = None
    dvc_inputs: dict[str, DvcHash] | None = None
    member_weights_sha256: dict[str, str | None] = {}  # shown, never run


class BatchRecord(Record):
    """batch.json: what the batch holds (its shards and their sha256) and where it came from.
    Format 1 (no `format` key) kept method and hashes on every manifest row instead."""

    label: ClassVar[str] = "batch.json"
    fix: ClassVar[str] = "the batch is damaged or not ensgan's: tell whoever publishes it"
    error: ClassVar[type[Exception]] = BatchError
    max_bytes: ClassVar[int] = 16 * MIB  # a shard list of tens of thousands of shards

    format: int = 1
    run_id: RunId
    created: str | None = None
    n_images: NonNegativeInt
    shards: list[Shard]
    method: str | None = None
    data_sha256: str | None = None
    params_sha256: str | None = None
    lineage: Lineage | None = None


class Verdict(Record):
    """gate/RUN_ID.json: the gate's verdict on one batch, and what it was judged by."""

    label: ClassVar[str] = "gate verdict"
    fix: ClassVar[str] = "move it aside; publishing the batch again judges it afresh"

    run_id: RunId
    prefix: Prefix
    decision: Decision
    reasons: list[str] = []
    not_compared: list[str] = []
    metrics: Figures | None = None
    champion: RunId | None = None
    pointer: str | None = None  # which latest.json the verdict was made against
    manifest_sha256: Hex64 | None = None  # the manifest judged (none before pinning)
    at: str


class Champion(Record):
    """latest.json: the batch consumers get as `latest`, pinned to the manifest judged."""

    label: ClassVar[str] = "champion record"
    fix: ClassVar[str] = "move it aside and name the champion with `ensgan batches promote RUN_ID`"

    run_id: RunId
    prefix: Prefix
    metrics: Figures | None = None
    how: str
    pointer: str | None = None
    manifest_sha256: Hex64 | None = None  # none in records written before pinning
    at: str


class HistoryRow(Record):
    """history/TIME-RUN_ID.json: one publish's figures (the combination's, each member's)."""

    label: ClassVar[str] = "history row"
    fix: ClassVar[str] = "move it aside (the history leaves it out until then)"

    run_id: RunId
    decision: Decision
    at: AwareDatetime
    metrics: Figures | None = None
    members: dict[str, Figures] = {}


R = TypeVar("R", bound=Record)


def _problem(err: dict) -> str:
    where = ".".join(str(p)[:40] for p in err["loc"])
    what = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    value = err.get("input")
    if isinstance(value, str | int | float) and err["type"] != "json_invalid":
        what += f", got {repr(value)[:60]}"
    return f"{where}: {what}" if where else what


def parse_record(kind: type[R], data: bytes, where: str) -> R:
    """`data` as a `kind`; kind.error naming `where`, the fields and the fix when it is not."""
    try:
        return kind.model_validate_json(data)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors(include_url=False)]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise kind.error(
            f"{where} is not a valid {kind.label} ({'; '.join(problems[:3])}{more}): {kind.fix}"
        ) from None


def read_record(kind: type[R], path: Path, where: str | None = None) -> R:
    """The record in a local file (`where`: what to call it, e.g. its store key)."""
    where = where or str(path)
    try:
        size = Path(path).stat().st_size
        if size > kind.max_bytes:
            raise kind.error(
                f"{where} is {size} bytes, more than a {kind.label} may be "
                f"({kind.max_bytes}): {kind.fix}"
            )
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise kind.error(f"{where}: missing") from None
    except OSError as exc:
        raise kind.error(f"{where}: unreadable ({exc.strerror})") from None
    return parse_record(kind, data, where)


def store_url(store: Store, key: str) -> str:
    """A key as the user names it: the store's url, then the key."""
    return f"{store.url.rstrip('/')}/{key}"


def fetch_record(store: Store, kind: type[R], key: str) -> R | None:
    """The record at `key` in the store, or None when there is none."""
    if not store.exists(key):
        return None
    size = store.size(key)
    if size > kind.max_bytes:  # judged from the listing: never downloaded to find out
        raise kind.error(
            f"{store_url(store, key)} is {size} bytes, more than a {kind.label} may be "
            f"({kind.max_bytes}): refused, not downloaded; {kind.fix}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "record.json"
        store.get_file(key, local)
        return read_record(kind, local, store_url(store, key))
