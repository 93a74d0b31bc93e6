"""Members trained on machines that share nothing with the driver but the object store.

With `train.runner: ray` a member task may run on any Ray node, where the project folder does
not exist. So the driver puts the prepared data in the work store (`storage.work_url`, by
default storage.url's sibling STORE-work: never inside the published store, which consumers
list and may read whole) at `data/SHA/`, the task downloads it into a temp folder of its own,
trains there (resuming from, or returning at once with, a copy of the member already in the
work store), uploads the member folder (`members/NAME/FINGERPRINT/`), and the driver
downloads it into models/members/NAME. Members already finished on the driver's disk are not
sent at all (flow._train_on_ray).
Every upload stores each file's content under its sha256 (`PREFIX/sha256/HEX`), then writes
`files.json`, the listing of names, sha256s and sizes, in one put: the switch from the upload
before to this one. A writer killed at any instant (a checkpoint's upload cut off by kill -9)
leaves the earlier listing and every object it names, so the next run resumes from the earlier
checkpoint; objects no listing names any more are removed after the switch. A download is
checked against the listing.

A stop reaches a member on another machine through the store too: the driver, asked to stop
(SIGTERM, Ctrl-C, its server gone), writes `stops/TOKEN` for its run, and each of its
tasks, polling for it, stops at its next step with a checkpoint and uploads it, so the next run
resumes there. Every periodic checkpoint is uploaded as well: a driver killed outright (Ray
then kills its tasks at once, with no time to save) loses only the steps since the last one.

The member's copy in the work store is also its cache across machines: a node that finds it
finished at the configured steps returns its card without training. (Prefect's own task
cache stays in its local result storage: a result storage shared by every node would need a
saved storage block, which Prefect refuses to create from a task.)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, NonNegativeInt, model_validator

from ensgan import stopping
from ensgan.config import Params, StorageConfig, stores_overlap
from ensgan.errors import BatchError, ConfigError, StopRequested, StorageError
from ensgan.gan.member import fingerprint
from ensgan.io.files import atomic_dir, file_sha256
from ensgan.io.keys import safe_key, safe_local_path
from ensgan.io.records import MIB, Hex64, Record, fetch_record, store_url
from ensgan.io.storage import Store, open_store
from ensgan.layout import Layout

MANIFEST = "files.json"
OBJECTS = "sha256/"  # format 3: each file's content at PREFIX + OBJECTS + its sha256
MAX_DEPTH = 16  # folders in a listed name
STOP_POLL_SECONDS = 2.0  # how often a member task looks for its run's stop
log = logging.getLogger(__name__)


def _relative_name(name: str) -> str:
    """A file's name in a listing: a safe store key (ensgan/io/keys.py), and no deeper or
    longer than a member's or the prepared data's own files could be."""
    try:
        safe_key(name)
    except StorageError:
        raise ValueError("not a safe relative path") from None
    parts = name.split("/")
    if len(parts) > MAX_DEPTH or len(name) > 1024 or any(len(p) > 255 for p in parts):
        raise ValueError(f"deeper than {MAX_DEPTH} folders or longer than a path may be")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("holds control characters")
    return name


class FileEntry(Record):
    sha256: Hex64
    bytes: NonNegativeInt


class TreeManifest(Record):
    """files.json: each file of an upload, its sha256 and its size. Format 3 keeps contents
    under their sha256s; format 2 (an older ensgan's, read still) under the files' names;
    format 1 (no `format` key: names to sha256s, no sizes) is read as no upload, so it is
    made again."""

    label: ClassVar[str] = MANIFEST
    fix: ClassVar[str] = "delete that prefix from the store; the run then uploads it afresh"
    error: ClassVar[type[Exception]] = BatchError
    max_bytes: ClassVar[int] = MIB  # thousands of files; a member holds a dozen

    format: Literal[2, 3] | None = None
    files: dict[Annotated[str, AfterValidator(_relative_name)], FileEntry] | None = None

    @model_validator(mode="after")
    def _files_are_not_folders(self) -> TreeManifest:
        names = set(self.files or ())
        for name in names:
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in names:
                    raise ValueError(f"{name!r} lies under {'/'.join(parts[:i])!r}, a file")
        return self

    def key(self, prefix: str, name: str) -> str:
        """Where the listed file's content is."""
        assert self.files is not None
        return prefix + (name if self.format == 2 else OBJECTS + self.files[name].sha256)


def _stored_manifest(store: Store, prefix: str) -> TreeManifest | None:
    """The upload's listing, bounded and typed; None when there is none (or an older one)."""
    manifest = fetch_record(store, TreeManifest, prefix + MANIFEST)
    if manifest is None:
        return None
    if manifest.format is None or manifest.files is None:
        log.warning("%s is from an older ensgan (no sizes): uploaded again", prefix + MANIFEST)
        return None
    return manifest


def _listing(local: Path) -> dict[str, FileEntry]:
    return {
        p.relative_to(local).as_posix(): FileEntry(sha256=file_sha256(p), bytes=p.stat().st_size)
        for p in sorted(Path(local).rglob("*"))
        if p.is_file()
    }


def upload_tree(store: Store, local: Path, prefix: str) -> int:
    """Every file under `local` to `prefix`, each content once under its sha256, then the
    listing in one put, then what no listing names any more removed; returns how many
    contents were uploaded (none when the store already holds them all)."""
    files = _listing(Path(local))
    try:
        before = _stored_manifest(store, prefix)
    except BatchError:
        before = None  # a bad listing is replaced by this upload's
    if before is not None and before.format == 3 and before.files == files:
        return 0  # a finished member found in the store and returned as it was
    stored = set(store.list_keys(prefix + OBJECTS))
    sent = 0
    for rel, entry in files.items():
        key = prefix + OBJECTS + entry.sha256
        if key not in stored or store.size(key) != entry.bytes:
            store.put_file(Path(local) / rel, key)
            stored.add(key)
            sent += 1
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / MANIFEST
        listing = {k: v.model_dump() for k, v in files.items()}
        manifest.write_text(json.dumps({"format": 3, "files": listing}, indent=1, sort_keys=True))
        store.put_file(manifest, prefix + MANIFEST)  # the switch: the old upload or this one
    named = {prefix + OBJECTS + e.sha256 for e in files.values()}
    older = [prefix + rel for rel in before.files] if before and before.format == 2 else []
    _remove(store, sorted(stored - named) + older)
    return sent


def _remove(store: Store, keys: list[str]) -> None:
    """Objects no listing names (a superseded checkpoint's, a cut-off upload's): a failure
    to remove one leaves it for the next upload, and fails nothing."""
    for key in keys:
        try:
            store.delete(key)
        except StorageError as exc:
            log.warning("could not remove %s (removed at the next upload): %s", key, exc)


def _download_file(store: Store, key: str, entry: FileEntry, target: Path) -> None:
    """One listed file, refused unread when the store's object is not the size listed, and
    refused after when its content is not the sha256 listed."""
    where = store_url(store, key)
    size = store.size(key)
    if size != entry.bytes:
        raise BatchError(
            f"{where} is {size} bytes, not the {entry.bytes} its {MANIFEST} says: refused, "
            f"not downloaded; {TreeManifest.fix}"
        )
    store.get_file(key, target)
    if target.stat().st_size != entry.bytes or file_sha256(target) != entry.sha256:
        target.unlink()
        raise BatchError(f"{where} does not match its sha256 in {MANIFEST}: {TreeManifest.fix}")


def download_tree(store: Store, prefix: str, local: Path) -> bool:
    """The files `prefix`'s manifest lists into `local` (a new folder), each checked against
    its size before and its sha256 after; False when the store holds no complete upload."""
    manifest = _stored_manifest(store, prefix)
    if manifest is None or manifest.files is None:
        return False
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    for rel, entry in manifest.files.items():
        target = safe_local_path(local, rel)  # a listing cannot write outside `local`
        _download_file(store, manifest.key(prefix, rel), entry, target)
    return True


def data_prefix(data_sha: str) -> str:
    return f"data/{data_sha}/"


def member_prefix(name: str, fp: str) -> str:
    return f"members/{name}/{fp[:32]}/"


def _resolved(url: str, layout: Layout) -> str:
    return url if url.startswith("s3://") else str((layout.root / url).resolve())


def work_store(params: Params, layout: Layout) -> StorageConfig:
    """The work store as the driver and a task elsewhere open it: storage's endpoint and
    waits, work_location()'s url, a local one by its absolute path (it must then be a folder
    every node sees; S3 needs nothing shared). Checked apart from the published store once
    resolved too (`store` and `../proj/store/x` overlap only on the disk)."""
    cfg = params.storage
    where = cfg.work_location()
    if where is None:  # Params refuses it for the ray runner: a caller's mistake
        raise ConfigError("storage.work_url is needed: storage.url has no sibling to stage in")
    work, published = _resolved(where, layout), _resolved(cfg.url, layout)
    if stores_overlap(work, published):
        raise ConfigError(
            f"storage.work_url resolves to {work}, which overlaps storage.url ({published}): "
            "name a folder of its own, outside the published store"
        )
    return cfg.model_copy(update={"url": work, "work_url": None})


def stage_data(store: Store, layout: Layout, data_sha: str) -> str:
    """Put data/prepared in the store once per data hash (what member tasks download)."""
    prefix = data_prefix(data_sha)
    try:
        staged = _stored_manifest(store, prefix) is not None
    except BatchError:
        staged = False  # a bad listing: replaced by this upload's
    if not staged:
        upload_tree(store, layout.prepared, prefix)
    return prefix


def stop_key(token: str) -> str:
    return f"stops/{safe_key(token)}"


def request_stop(store: Store, token: str) -> None:
    """Ask every member task of the run `token` to stop at its next step (they poll for it)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "stop"
        marker.write_text("stop\n")
        store.put_file(marker, stop_key(token))


def _watch_for_stop(store: Store, key: str, done: threading.Event) -> None:
    while not done.wait(STOP_POLL_SECONDS):
        try:
            if store.exists(key):
                stopping.request("the flow that started this member stopped")
                return
        except Exception:  # a passing store fault: look again at the next poll
            continue


def train_elsewhere(
    name: str, params: dict, storage: dict, data_sha: str, threads: int, stop_token: str = ""
) -> dict:
    """The member task's body on a node: store in, train in a temp folder, store out (each
    checkpoint, and the one a stop saves, as well as the finished member). Gets the params as
    data (the params file is on the driver's disk, not here)."""
    import torch

    from ensgan.config import parse_params
    from ensgan.pipeline.train import train_one

    torch.set_num_threads(threads)
    p = parse_params(params)
    store = open_store(StorageConfig(**storage))
    prefix = member_prefix(name, fingerprint(data_sha, p.members[name], p.train))
    stopping.clear()  # this process may have run a stopped run's task before
    done = threading.Event()
    if stop_token:
        args = (store, stop_key(stop_token), done)
        threading.Thread(target=_watch_for_stop, args=args, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="ensgan-member-") as tmp:
        layout = Layout(Path(tmp))
        if not download_tree(store, data_prefix(data_sha), layout.prepared):
            raise BatchError(f"no prepared data {data_sha[:12]} in {store.url}")
        download_tree(store, prefix, layout.member(name))  # resume or finished, if there

        def upload_checkpoint(step: int) -> None:  # the loop saved it just before
            if step % p.train.checkpoint_every == 0 and step < p.train.steps:
                upload_tree(store, layout.member(name), prefix)

        try:
            card = train_one(p, layout, name, progress=False, callback=upload_checkpoint)
        except StopRequested:
            upload_tree(store, layout.member(name), prefix)  # the step reached, resumable
            raise
        finally:
            done.set()
        upload_tree(store, layout.member(name), prefix)
    return {**card, "trained_on": {"pid": os.getpid(), "node": _node_id()}}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:  # not on Ray
        return None


def fetch_member(store: Store, layout: Layout, name: str, card: dict) -> None:
    """The member a task uploaded, into models/members/NAME (replacing what was there)."""
    prefix = member_prefix(name, card["fingerprint"])
    with atomic_dir(layout.member(name)) as work:
        if not download_tree(store, prefix, work):
            raise BatchError(f"member {name} is not in {store.url}/{prefix}: train it again")
