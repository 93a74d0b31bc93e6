"""Generated-image batches: write, verify, publish, list and pull.

A batch is a directory `<run_id>/` with uncompressed WebDataset tar shards (`shard-00000.tar`
holding `000000.png` and its manifest row as `000000.json`, ...: `wds.WebDataset(urls)` and
Hugging Face's `webdataset` loader yield image plus metadata), a `batch.json` (format version,
provenance shared by every image, shard checksums) and a `manifest.jsonl` (one row per image:
member, seed, score, the PNG's sha256). The manifest is always
written and uploaded LAST: its presence is what makes a batch complete, so a crash mid-write or
mid-upload leaves something invisible rather than something wrong. Published batches are
immutable: publishing a different batch under a run_id that exists is an error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ensgan.errors import BatchError, StorageError
from ensgan.io.files import atomic_dir, exclusive, file_sha256
from ensgan.io.keys import safe_local_path
from ensgan.io.records import (
    RUN_ID_RE,
    SHARD_RE,
    BatchRecord,
    Shard,
    fetch_record,
    read_record,
    store_url,
)
from ensgan.io.shards import check_shard, expected_members, jsonable, row_bytes
from ensgan.io.storage import Store

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BATCH_JSON = "batch.json"
# 2: a .json sidecar per image in the shards, and the batch-wide fields (data_sha256,
# params_sha256, method) only in batch.json. 1 (no `format` key): PNGs only, fields per row.
FORMAT = 2
MANIFEST = "manifest.jsonl"
# A manifest beyond this per image is not one ensgan wrote: `pull` refuses it undownloaded
# (batch.json's own bound is BatchRecord.max_bytes).
ROW_MAX_BYTES = 64 * 1024
ROOT = "batches/"
_PUBLISHED_RE = re.compile(r"^batches/(\d{4}-\d{2}-\d{2})/([^/]+)/" + re.escape(MANIFEST) + "$")
_ROW_RESERVED = frozenset({"id", "shard", "file", "sha256", "bytes"})
_BATCH_RESERVED = frozenset({"format", "run_id", "created", "n_images", "shards"})


@dataclass(frozen=True)
class BatchInfo:
    date: dt.date
    run_id: str
    prefix: str  # store key prefix, ending in '/'
    n_images: int | None  # None when its batch.json cannot be read
    error: str | None = None  # why it cannot be read, naming the store key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_run_id(run_id: str) -> str:
    """run_ids become directory names and key segments, so they are kept boring."""
    if not RUN_ID_RE.match(run_id):
        raise BatchError(f"invalid run_id {run_id!r}: must match {RUN_ID_RE.pattern}")
    return run_id


def _check_inputs(images: np.ndarray, rows: list[dict], shard_size: int, extra: dict) -> None:
    if images.dtype != "uint8" or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BatchError(
            f"images must be uint8 (N, C, H, W) with C in {{1, 3}}, "
            f"got {images.dtype} {images.shape}"
        )
    if len(rows) != len(images):
        raise BatchError(f"{len(rows)} metadata rows for {len(images)} images")
    if shard_size <= 0:
        raise BatchError(f"shard_size must be positive, got {shard_size}")
    clash = (_ROW_RESERVED | _BATCH_RESERVED) & set(extra)
    clash |= {k for row in rows for k in (_ROW_RESERVED | set(extra)) & set(row)}
    if clash:
        raise BatchError(f"metadata keys {sorted(clash)} clash with the batch's own fields")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime 0, no owner: identical inputs give identical shards
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_shards(
    work: Path, images: np.ndarray, rows: list[dict], shard_size: int
) -> tuple[list[dict], list[dict]]:
    """Write the tar shards into `work`; return (manifest rows, shard records)."""
    from ensgan.io.images import png_bytes  # numpy and Pillow: only for writing, not `ls`

    manifest: list[dict] = []
    shards: list[dict] = []
    for index, start in enumerate(range(0, len(images), shard_size)):
        name = f"shard-{index:05d}.tar"
        stop = min(start + shard_size, len(images))
        with tarfile.open(work / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(start, stop):
                png, member = png_bytes(images[i]), f"{i:06d}.png"
                row = {**rows[i], "id": i, "shard": name, "file": member}
                row |= {"sha256": _sha256(png), "bytes": len(png)}
                _add_member(tar, member, png)
                _add_member(tar, f"{i:06d}.json", row_bytes(row))  # WebDataset's sidecar
                manifest.append(row)
        path = work / name
        shards.append(
            {
                "name": name,
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
                "n_images": stop - start,
            }
        )
    return manifest, shards


def write_batch(
    out_dir: Path,
    run_id: str,
    images: np.ndarray,
    rows: list[dict],
    *,
    shard_size: int,
    extra: dict,
) -> Path:
    """Write `out_dir/<run_id>/` atomically (built aside, renamed); never overwrite a batch."""
    check_run_id(run_id)
    _check_inputs(images, rows, shard_size, extra)
    final = Path(out_dir) / run_id
    if final.exists():
        raise BatchError(f"batch {final} already exists; refusing to overwrite it")
    try:
        with atomic_dir(final, replace=False) as work:
            manifest, shards = _write_shards(work, images, rows, shard_size)
            meta = {
                "format": FORMAT,
                "run_id": run_id,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "n_images": len(images),
                **extra,
                "shards": shards,
            }
            text = json.dumps(meta, indent=2, sort_keys=True, default=jsonable)
            (work / BATCH_JSON).write_text(text + "\n")
            lines = (row_bytes(r).decode() + "\n" for r in manifest)
            (work / MANIFEST).write_text("".join(lines))  # last: marks the batch complete
    except FileExistsError:
        raise BatchError(
            f"batch {final} appeared while writing; refusing to overwrite it"
        ) from None
    return final


def read_batch_json(path: Path, where: str | None = None) -> BatchRecord:
    """A batch.json, typed (ensgan/io/records.py): a bad one is a BatchError naming it."""
    return read_record(BatchRecord, path, where)


def _read_manifest(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BatchError(f"{path}: missing (the batch is incomplete)") from None
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser
        raise BatchError(f"{path}: invalid JSON line ({exc})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise BatchError(f"{path}: every line must be a JSON object")
    return rows


def _check_shard_record(batch_dir: Path, shard: Shard) -> Path:
    """The shard batch.json lists (a plain name: BatchRecord checked it), there, of its size
    and sha256."""
    path = batch_dir / shard.name
    if not path.is_file():
        raise BatchError(f"{path}: shard missing")
    size = path.stat().st_size
    if size != shard.bytes:
        raise BatchError(f"{path}: {size} bytes, {BATCH_JSON} says {shard.bytes}")
    if file_sha256(path) != shard.sha256:
        raise BatchError(f"{path}: sha256 does not match {BATCH_JSON}")
    return path


def _verify_shard(batch_dir: Path, shard: Shard, rows: list[dict], sidecars: bool) -> None:
    """The shard's size and sha256, then its members as a reader meets them (io/shards.py):
    exactly the rows' PNGs (and, format 2, their .json sidecars), each against its row."""
    path = _check_shard_record(batch_dir, shard)
    if len(rows) != shard.n_images:
        raise BatchError(
            f"{path}: {BATCH_JSON} says {shard.n_images} images, {MANIFEST} lists {len(rows)}"
        )
    check_shard(path, expected_members(rows, sidecars, batch_dir / MANIFEST), MANIFEST)


def _check_ids(rows: list[dict], where: Path) -> None:
    """Each row's `id` an integer no other row has: images are named and regenerated by it."""
    ids = [row.get("id") for row in rows]
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise BatchError(f"{where}: row ids {bad[:5]} are not integers")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise BatchError(f"{where}: row ids {twice[:5]} appear more than once")


def manifest_rows(batch_dir: Path) -> list[dict]:
    """A verified batch's manifest rows, checked again for what regenerate relies on."""
    rows = _read_manifest(Path(batch_dir) / MANIFEST)
    _check_ids(rows, Path(batch_dir) / MANIFEST)
    return rows


def verify_batch(batch_dir: Path) -> int:
    """Check every shard and every manifest row against their sha256; return the image count."""
    batch_dir = Path(batch_dir)
    meta = read_batch_json(batch_dir / BATCH_JSON)
    rows = _read_manifest(batch_dir / MANIFEST)
    if len(rows) != meta.n_images:
        raise BatchError(
            f"{batch_dir / MANIFEST}: {len(rows)} rows, {BATCH_JSON} says {meta.n_images}"
        )
    _check_ids(rows, batch_dir / MANIFEST)
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_shard[str(row.get("shard"))].append(row)
    names = [s.name for s in meta.shards]
    if len(set(names)) != len(names):
        raise BatchError(f"{batch_dir / BATCH_JSON}: a shard is listed more than once")
    unknown = set(by_shard) - set(names)
    if unknown:
        raise BatchError(f"{batch_dir / MANIFEST}: rows name unknown shards {sorted(unknown)}")
    if meta.format not in (1, FORMAT):
        raise BatchError(
            f"{batch_dir / BATCH_JSON}: batch format {meta.format!r}; this ensgan reads 1 and "
            f"{FORMAT}: upgrade ensgan"
        )
    for shard in meta.shards:
        _verify_shard(batch_dir, shard, by_shard.get(shard.name, []), meta.format >= 2)
    return len(rows)


def _published(store: Store) -> list[tuple[dt.date, str, str]]:
    """(date, run_id, prefix) of every COMPLETE batch: those whose manifest is uploaded."""
    found = []
    for key in store.list_keys(ROOT):
        m = _PUBLISHED_RE.match(key)
        if m and RUN_ID_RE.match(m[2]):
            try:
                day = dt.date.fromisoformat(m[1])
            except ValueError:
                continue
            found.append((day, m[2], key[: -len(MANIFEST)]))
    return sorted(found)


def _download(store: Store, key: str, local: Path, limit: int, *, exact: bool = False) -> Path:
    """`key` into `local`, but only if the store's listing gives it at most `limit` bytes
    (exactly `limit` with `exact`): an object larger than what batch.json says, or than any
    batch.json ensgan writes, is refused before it is downloaded."""
    found = store.size(key)
    if found > limit or (exact and found != limit):
        said = f"{BATCH_JSON} says {limit}" if exact else f"more than the {limit} allowed"
        raise BatchError(f"{store.url}/{key} is {found} bytes, {said}: refused, not downloaded")
    store.get_file(key, local)
    return local


def _fetch(store: Store, key: str, tmp: Path, limit: int = BatchRecord.max_bytes) -> Path:
    """`key` into the folder `tmp`; at most `limit` bytes (a batch.json's bound by default)."""
    return _download(store, key, tmp / key.replace("/", "_"), limit)


def _manifest_limit(meta: BatchRecord) -> int:
    """The most bytes the manifest of the batch `meta` describes may hold."""
    return (meta.n_images + 1) * ROW_MAX_BYTES


def list_batches(store: Store) -> list[BatchInfo]:
    """Complete batches in the store, by date then run_id; half uploads are invisible, and one
    whose batch.json cannot be read is listed with the reason instead of hiding the others."""
    out = []
    for day, run_id, prefix in _published(store):
        try:
            meta = fetch_record(store, BatchRecord, prefix + BATCH_JSON)
            if meta is None:
                raise BatchError(f"{store_url(store, prefix + BATCH_JSON)}: missing")
        except (BatchError, StorageError) as exc:
            out.append(BatchInfo(day, run_id, prefix, None, f"unreadable {exc}"))
            continue
        out.append(BatchInfo(day, run_id, prefix, meta.n_images))
    return out


def manifest_sha256(store: Store, prefix: str) -> str:
    """The sha256 of the manifest a published batch has in the store now."""
    with tempfile.TemporaryDirectory() as tmp:
        return file_sha256(_fetch(store, prefix + MANIFEST, Path(tmp)))


def _check_pin(got: str, pinned: str | None, where: str) -> None:
    """The manifest is the one the gate judged (latest.json and its verdict pin its sha256):
    a batch replaced whole, checksums and all, verifies, but not against the pin."""
    if pinned is not None and got != pinned:
        raise BatchError(
            f"{where}: sha256 {got}, but the store's gate records pin {pinned}: the batch was "
            "replaced after it was judged. Do not use it: tell whoever publishes it"
        )


def _same_manifest(store: Store, prefix: str, local_manifest: Path) -> bool:
    size = local_manifest.stat().st_size
    if store.size(prefix + MANIFEST) != size:
        return False  # not the same, and not downloaded to find out
    with tempfile.TemporaryDirectory() as tmp:
        remote = _fetch(store, prefix + MANIFEST, Path(tmp), size)
        return remote.read_bytes() == local_manifest.read_bytes()


def _resume_date(store: Store, run_id: str) -> dt.date | None:
    """Date of an interrupted upload of this run (files but no manifest), to finish it there."""
    for key in store.list_keys(ROOT):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == run_id:
            try:
                return dt.date.fromisoformat(parts[1])
            except ValueError:
                continue
    return None


def publish_batch(store: Store, batch_dir: Path, date: dt.date | None = None) -> dict:
    """Upload a verified batch under batches/<date>/<run_id>/, manifest last; never overwrite."""
    batch_dir = Path(batch_dir)
    n_images = verify_batch(batch_dir)
    meta = read_batch_json(batch_dir / BATCH_JSON)
    run_id = meta.run_id
    digest = file_sha256(batch_dir / MANIFEST)
    for _, _, prefix in (p for p in _published(store) if p[1] == run_id):
        if _same_manifest(store, prefix, batch_dir / MANIFEST):
            return {"status": "already-published", "prefix": prefix, "manifest_sha256": digest}
        raise BatchError(
            f"a different batch {run_id!r} is already published at {store.url}/{prefix}; "
            "published batches are immutable, use a new run_id"
        )
    day = date or _resume_date(store, run_id) or dt.datetime.now(dt.UTC).date()
    prefix = f"{ROOT}{day.isoformat()}/{run_id}/"
    names = [s.name for s in meta.shards] + [BATCH_JSON, MANIFEST]
    url = store_url(store, prefix)
    for i, name in enumerate(names, start=1):
        _progress("uploading", name, i, len(names), url, batch_dir / name)
        store.put_file(batch_dir / name, prefix + name)
    return {
        "status": "published",
        "prefix": prefix,
        "n_images": n_images,
        "url": url,
        "manifest_sha256": digest,
    }


def _progress(doing: str, name: str, i: int, n: int, where: str, local: Path | None = None) -> None:
    """One log line per file moved, so that a long transfer (or a stalled one) shows where it is."""
    size = f", {local.stat().st_size / 2**20:.1f} MiB" if local is not None else ""
    log.info("%s %s (%d of %d%s) %s %s", doing, name, i, n, size, "to" if local else "from", where)


def _find_one(store: Store, run_id: str) -> str:
    prefixes = [p for _, r, p in _published(store) if r == run_id]
    if not prefixes:
        raise BatchError(f"no complete batch {run_id!r} in {store.url}")
    if len(prefixes) > 1:
        raise BatchError(f"batch {run_id!r} is published more than once in {store.url}: {prefixes}")
    return prefixes[0]


def batch_meta(store: Store, run_id: str) -> tuple[str, BatchRecord]:
    """A published batch's store prefix and its batch.json."""
    check_run_id(run_id)
    prefix = _find_one(store, run_id)
    meta = fetch_record(store, BatchRecord, prefix + BATCH_JSON)
    if meta is None:
        raise BatchError(f"{store_url(store, prefix + BATCH_JSON)}: missing")
    return prefix, meta


def repair_batch(store: Store, run_id: str, dest: Path, *, pinned: str | None = None) -> list[str]:
    """Download again just the files of dest/<run_id>/ that are missing or do not match the
    store (batch.json, damaged shards, the manifest last); return their names. Files the batch
    does not list are left alone. `pinned`: the manifest sha256 the gate's records hold."""
    check_run_id(run_id)
    prefix = _find_one(store, run_id)
    with _pull_lock(Path(dest), run_id):
        return _repair(store, prefix, Path(dest) / run_id, pinned)


def _repair(store: Store, prefix: str, target: Path, pinned: str | None) -> list[str]:
    if not target.is_dir():
        raise BatchError(f"{target}: no earlier pull to repair; pull it without --repair")
    fixed = []
    with tempfile.TemporaryDirectory() as tmp:
        remote_meta = _fetch(store, prefix + BATCH_JSON, Path(tmp))
        meta = read_batch_json(remote_meta, store_url(store, prefix + BATCH_JSON))
        remote_manifest = _fetch(store, prefix + MANIFEST, Path(tmp), _manifest_limit(meta))
        _check_pin(file_sha256(remote_manifest), pinned, store_url(store, prefix + MANIFEST))
        shards = [(s.name, s.bytes, s.sha256) for s in meta.shards]  # plain names: checked
        wanted = [(BATCH_JSON, remote_meta.stat().st_size, file_sha256(remote_meta)), *shards]
        wanted.append((MANIFEST, remote_manifest.stat().st_size, file_sha256(remote_manifest)))
        for name, size, sha in wanted:  # the manifest last: the marker
            local = safe_local_path(target, name)
            if local.is_file() and file_sha256(local) == sha:
                continue
            # exactly its listed size, through a temp file: never half a file
            _download(store, prefix + name, local, size, exact=True)
            fixed.append(name)
    try:
        verify_batch(target)
    except BatchError as exc:
        raise BatchError(
            f"{target} still fails verification after repair: {exc}. The published batch is "
            "damaged: tell whoever publishes it"
        ) from exc
    return fixed


class _ReplacedError(BatchError):
    """The store's manifest is not the one its gate records pin: pulling again cannot help."""


def pull_batch(store: Store, run_id: str, dest: Path, *, pinned: str | None = None) -> Path:
    """Download a complete batch into dest/<run_id>/ and verify it; refuse to clobber.
    `pinned`: the manifest sha256 the gate's records hold (`latest` is checked against it)."""
    check_run_id(run_id)
    prefix = _find_one(store, run_id)
    with _pull_lock(Path(dest), run_id):
        return _pull(store, run_id, prefix, Path(dest), pinned)


def _pull_lock(dest: Path, run_id: str) -> contextlib.AbstractContextManager[None]:
    """One pull or repair of a batch into a folder at a time: a second one would remove the
    first's staging folder under it and report the published batch as damaged."""
    dest.mkdir(parents=True, exist_ok=True)
    return exclusive(
        dest / f".{run_id}.pull.lock",
        f"another `ensgan batches pull` of {run_id} into {dest} is running (lock "
        f"{dest / f'.{run_id}.pull.lock'}): wait for it to finish, then run this again",
    )


def _pull(store: Store, run_id: str, prefix: str, dest: Path, pinned: str | None) -> Path:
    target = dest / run_id
    if target.exists() and not target.is_dir():
        raise BatchError(f"{target} exists and is not a folder: move it away, or pull elsewhere")
    repair = f"`ensgan batches pull {run_id} {dest} --repair` downloads what is damaged again"
    if target.is_dir() and any(target.iterdir()):
        if (target / MANIFEST).is_file() and _same_manifest(store, prefix, target / MANIFEST):
            _check_pin(file_sha256(target / MANIFEST), pinned, str(target / MANIFEST))
            try:
                verify_batch(target)
            except BatchError as exc:
                raise BatchError(f"the local copy is damaged: {exc}; {repair}") from None
            return target
        names = [p.name for p in target.iterdir()]
        if all(n == BATCH_JSON or SHARD_RE.match(n) for n in names):  # manifest comes last
            raise BatchError(f"{target} holds an incomplete earlier pull (no {MANIFEST}); {repair}")
        raise BatchError(f"{target} exists with different content; refusing to overwrite it")
    # Only what batch.json lists is copied, into a staging folder that becomes dest/<run_id>/
    # once every checksum matched: a failed pull leaves nothing that looks like a batch.
    try:
        with atomic_dir(target, replace=False) as work:
            batch_json = work / BATCH_JSON
            _download(store, prefix + BATCH_JSON, batch_json, BatchRecord.max_bytes)
            meta = read_batch_json(batch_json, store_url(store, prefix + BATCH_JSON))
            where = store_url(store, prefix)
            for i, shard in enumerate(meta.shards, start=1):  # names the record checked
                _progress("downloading", shard.name, i, len(meta.shards), where)
                local = safe_local_path(work, shard.name)
                _download(store, prefix + shard.name, local, shard.bytes, exact=True)
            limit = _manifest_limit(meta)
            _download(store, prefix + MANIFEST, work / MANIFEST, limit)  # the marker, last
            try:
                where = store_url(store, prefix + MANIFEST)
                _check_pin(file_sha256(work / MANIFEST), pinned, where)
            except BatchError as exc:
                raise _ReplacedError(f"{exc}; nothing was kept in {target}") from None
            verify_batch(work)
    except _ReplacedError:
        raise
    except BatchError as exc:
        raise BatchError(
            f"pulled batch {run_id!r} from {store.url}/{prefix} failed verification, so nothing "
            f"was kept in {target}: {exc}. Pull again; if it fails the same way, the published "
            "batch is damaged: tell whoever publishes it"
        ) from exc
    return target
