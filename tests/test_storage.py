"""Stores and the batch format, against a local directory, a real SeaweedFS and moto."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from botocore.stub import Stubber
from PIL import Image
from pydantic import ValidationError

from ensgan.config import StorageConfig
from ensgan.errors import ConfigError, StorageError
from ensgan.io.batches import (
    BATCH_JSON,
    MANIFEST,
    BatchError,
    BatchInfo,
    list_batches,
    publish_batch,
    pull_batch,
    repair_batch,
    verify_batch,
    write_batch,
)
from ensgan.io.keys import safe_key, safe_local_path
from ensgan.io.records import BatchRecord
from ensgan.io.s3 import MIB, S3Store
from ensgan.io.storage import LocalStore, Store, open_store
from tests.helpers import DAY, make_batch, manifest


def read_png(batch_dir: Path, row: dict) -> np.ndarray:
    with tarfile.open(batch_dir / row["shard"]) as tar:
        data = tar.extractfile(row["file"]).read()
    return np.asarray(Image.open(io.BytesIO(data)))


E2E = pytest.mark.e2e  # starts a real S3 server
SERVERS = [pytest.param("seaweedfs", marks=E2E), pytest.param("moto_s3", marks=E2E)]


@pytest.fixture(params=["local", *SERVERS])
def store(request: pytest.FixtureRequest, tmp_path: Path, s3_bucket: Callable) -> Store:
    """The same Store API over each backend; S3 stores also use a key prefix."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue(request.param)
    return S3Store(s3_bucket(server), "team/ensgan", server.endpoint_url, "us-east-1")


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- write / verify (local only: no store involved) -----------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_write_batch_layout_and_contents(tmp_path: Path, channels: int) -> None:
    batch, images = make_batch(tmp_path, channels=channels)
    assert batch == tmp_path / "run-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-1"]  # no .partial left
    names = ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert sorted(p.name for p in batch.iterdir()) == sorted([*names, BATCH_JSON, MANIFEST])
    meta = json.loads((batch / BATCH_JSON).read_text())
    assert meta["run_id"] == "run-1" and meta["n_images"] == 7 and meta["method"] == "vote"
    assert meta["format"] == 2 and meta["data_sha256"] == "d" * 64
    assert dt.datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert [s["name"] for s in meta["shards"]] == names
    assert [s["n_images"] for s in meta["shards"]] == [3, 3, 1]
    rows = manifest(batch)
    assert [r["id"] for r in rows] == list(range(7))
    assert rows[4]["shard"] == "shard-00001.tar" and rows[4]["file"] == "000004.png"
    assert rows[4]["seed"] == 4
    assert not {"data_sha256", "params_sha256", "method"} & set(rows[4])  # once, in batch.json
    assert rows[6]["score"] == 1.0
    for row, image in zip(rows, images, strict=True):
        expected = image[0] if channels == 1 else image.transpose(1, 2, 0)
        np.testing.assert_array_equal(read_png(batch, row), expected)
    with tarfile.open(batch / names[0]) as tar:  # WebDataset samples: NNNNNN.{png,json}
        assert tar.getnames() == [f"00000{i}.{ext}" for i in range(3) for ext in ("png", "json")]
        assert json.loads(tar.extractfile("000001.json").read()) == rows[1]
    assert verify_batch(batch) == 7


def test_write_batch_refuses_to_overwrite_and_bad_input(tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path)
    before = (batch / MANIFEST).read_bytes()
    with pytest.raises(BatchError, match="already exists"):
        make_batch(tmp_path, seed=1)
    assert (batch / MANIFEST).read_bytes() == before
    ok = np.zeros((2, 1, 8, 8), np.uint8)
    rows = [{"member": "g", "seed": 0, "score": 0.0}] * 2
    for run_id in ["../evil", "", "-x", "a/b", "x" * 129]:
        with pytest.raises(BatchError, match="invalid run_id"):
            write_batch(tmp_path, run_id, ok, rows, shard_size=2, extra={})
    with pytest.raises(BatchError, match="uint8"):
        write_batch(tmp_path, "r2", ok.astype(np.float32), rows, shard_size=2, extra={})
    with pytest.raises(BatchError, match="C in"):
        write_batch(tmp_path, "r2", np.zeros((2, 2, 8, 8), np.uint8), rows, shard_size=2, extra={})
    with pytest.raises(BatchError, match="clash"):
        write_batch(tmp_path, "r2", ok, [{"sha256": "x"}] * 2, shard_size=2, extra={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-1"]


def test_verify_detects_tampering(tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path)
    # A manifest row whose checksum no longer matches its PNG.
    rows = manifest(batch)
    rows[5]["sha256"] = "0" * 64
    good_manifest = (batch / MANIFEST).read_text()
    (batch / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BatchError, match=r"shard-00001\.tar: member 000005\.png"):
        verify_batch(batch)
    rows = manifest(batch)
    rows[1]["file"] = "999999.png"
    (batch / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BatchError, match=r"member 999999\.png missing"):
        verify_batch(batch)
    (batch / MANIFEST).write_text(good_manifest)
    assert verify_batch(batch) == 7
    # A flipped byte inside a shard.
    shard = batch / "shard-00002.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(BatchError, match=r"shard-00002\.tar: sha256"):
        verify_batch(batch)
    shard.unlink()
    with pytest.raises(BatchError, match=r"shard-00002\.tar: shard missing"):
        verify_batch(batch)
    (batch / MANIFEST).unlink()
    with pytest.raises(BatchError, match="incomplete"):
        verify_batch(batch)


# --- key and path safety ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../x", "a//b", "a\\b", "", "./a", "a/"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="unsafe storage key"):
        safe_key(key)
    with pytest.raises(StorageError):
        LocalStore(tmp_path).put_file(Path(__file__), key)


@pytest.mark.parametrize("rel", ["../x", "/abs", "a/../../x", "", "a\\..\\..\\x", "."])
def test_safe_local_path_refuses_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(StorageError, match="refusing"):
        safe_local_path(tmp_path / "dest", rel)


def test_safe_local_path_accepts_nested(tmp_path: Path) -> None:
    assert safe_local_path(tmp_path, "a/b.tar") == (tmp_path / "a" / "b.tar").resolve()


# --- publish / list / pull on every backend --------------------------------------------------


def test_publish_list_pull_roundtrip(store: Store, tmp_path: Path) -> None:
    batch, images = make_batch(tmp_path / "out", channels=1)
    assert list_batches(store) == []
    receipt = publish_batch(store, batch, DAY)
    prefix = "batches/2026-03-14/run-1/"
    assert receipt == {
        "status": "published",
        "prefix": prefix,
        "n_images": 7,
        "url": f"{store.url}/{prefix}",
        "manifest_sha256": hashlib.sha256((batch / MANIFEST).read_bytes()).hexdigest(),
    }
    assert store.exists(prefix + MANIFEST) and not store.exists(prefix + "nope")
    assert store.list_keys("batches/") == sorted(prefix + p.name for p in batch.iterdir())
    assert list_batches(store) == [BatchInfo(DAY, "run-1", prefix, 7)]

    pulled = pull_batch(store, "run-1", tmp_path / "pulled")
    assert pulled == tmp_path / "pulled" / "run-1"
    assert verify_batch(pulled) == 7
    for f in batch.iterdir():
        assert (pulled / f.name).read_bytes() == f.read_bytes(), f.name
    rows = manifest(pulled)
    np.testing.assert_array_equal(read_png(pulled, rows[6]), images[6, 0])
    assert pull_batch(store, "run-1", tmp_path / "pulled") == pulled  # same content: a no-op


def test_delete_removes_one_object_and_is_quiet_when_none(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x")
    store.put_file(src, "work/a/f.bin")
    store.put_file(src, "work/a/g.bin")
    store.delete("work/a/f.bin")
    store.delete("work/a/f.bin")  # gone already: nothing to do
    assert store.list_keys("work/") == ["work/a/g.bin"]


def test_republish_is_idempotent_and_immutable(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "a")
    first = publish_batch(store, batch, DAY)
    again = publish_batch(store, batch, DAY + dt.timedelta(days=1))
    assert again == {
        "status": "already-published",
        "prefix": first["prefix"],
        "manifest_sha256": first["manifest_sha256"],
    }
    other, _ = make_batch(tmp_path / "b", seed=42)  # same run_id, different images
    with pytest.raises(BatchError, match="different batch 'run-1' is already published"):
        publish_batch(store, other)
    assert [b.prefix for b in list_batches(store)] == [first["prefix"]]
    pulled = pull_batch(store, "run-1", tmp_path / "pulled")
    assert (pulled / MANIFEST).read_bytes() == (batch / MANIFEST).read_bytes()


def test_half_uploaded_batch_is_invisible_then_completed(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    done, _ = make_batch(tmp_path / "out", run_id="run-0")
    publish_batch(store, done, DAY)
    prefix = "batches/2026-01-01/run-1/"
    for f in sorted(batch.iterdir()):
        if f.name != MANIFEST:  # an upload that died just before the manifest
            store.put_file(f, prefix + f.name)
    assert [b.run_id for b in list_batches(store)] == ["run-0"]
    with pytest.raises(BatchError, match="no complete batch 'run-1'"):
        pull_batch(store, "run-1", tmp_path / "pulled")
    # Retrying finishes the interrupted upload where it started instead of orphaning it.
    assert publish_batch(store, batch)["prefix"] == prefix
    assert [(b.date, b.run_id) for b in list_batches(store)] == [
        (dt.date(2026, 1, 1), "run-1"),
        (DAY, "run-0"),
    ]


def test_pull_detects_tampered_shard(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(store, batch, DAY)["prefix"]
    evil = tmp_path / "evil.tar"
    data = bytearray((batch / "shard-00001.tar").read_bytes())
    data[700] ^= 0x01
    evil.write_bytes(bytes(data))
    store.put_file(evil, prefix + "shard-00001.tar")
    with pytest.raises(BatchError, match=r"nothing was kept.*shard-00001\.tar: sha256"):
        pull_batch(store, "run-1", tmp_path / "pulled")
    # Nothing that looks like a batch, and no staging folder, is left behind: only the lock.
    assert not (tmp_path / "pulled" / "run-1").exists()
    assert [p.name for p in (tmp_path / "pulled").iterdir()] == [".run-1.pull.lock"]


def test_pull_detects_tampered_manifest_row(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(store, batch, DAY)["prefix"]
    rows = manifest(batch)
    rows[0]["sha256"] = "f" * 64
    evil = tmp_path / MANIFEST
    evil.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.put_file(evil, prefix + MANIFEST)
    with pytest.raises(BatchError, match=r"member 000000\.png does not match"):
        pull_batch(store, "run-1", tmp_path / "pulled")


class _EvilListing:
    """A store whose listing also names a key that would land outside the download dir."""

    def __init__(self, inner: Store, extra_key: str) -> None:
        self.inner, self.extra_key, self.url = inner, extra_key, inner.url

    def list_keys(self, prefix: str = "") -> list[str]:
        keys = self.inner.list_keys(prefix)
        return sorted([*keys, self.extra_key]) if prefix.endswith("/run-1/") else keys

    def get_file(self, key: str, local: Path) -> None:
        self.inner.get_file(key, local)

    def put_file(self, local: Path, key: str) -> None:
        self.inner.put_file(local, key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)


@pytest.mark.parametrize("rel", ["../../escaped.tar", "/abs/escaped.tar", "extra.bin"])
def test_pull_copies_only_what_batch_json_lists(store: Store, tmp_path: Path, rel: str) -> None:
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(store, batch, DAY)["prefix"]
    evil = _EvilListing(store, prefix + rel)  # a listing that names one more key
    pulled = pull_batch(evil, "run-1", tmp_path / "dest")
    assert sorted(p.name for p in pulled.iterdir()) == sorted(p.name for p in batch.iterdir())
    assert not list(tmp_path.rglob("escaped.tar")) and not list(tmp_path.rglob("extra.bin"))


@pytest.mark.parametrize("name", ["../../escaped.tar", "/abs/escaped.tar", "notes.txt"])
def test_pull_refuses_shard_names_that_are_not_plain(
    store: Store, tmp_path: Path, name: str
) -> None:
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(store, batch, DAY)["prefix"]
    meta = json.loads((batch / BATCH_JSON).read_text())
    meta["shards"][0]["name"] = name
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(meta))
    store.put_file(evil, prefix + BATCH_JSON)
    with pytest.raises(BatchError, match="not a shard name"):
        pull_batch(store, "run-1", tmp_path / "dest")
    assert not list(tmp_path.rglob("escaped.tar"))
    assert not (tmp_path / "dest" / "run-1").exists()


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "sub/000000.png", ".hidden"])
def test_verify_refuses_tar_members_a_consumer_could_not_extract_safely(
    tmp_path: Path, member: str
) -> None:
    """A shard consistent with batch.json (its sha256 updated) but holding an unsafe name."""
    batch, _ = make_batch(tmp_path / "out")
    shard = batch / "shard-00000.tar"
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo(member)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    meta = json.loads((batch / BATCH_JSON).read_text())
    meta["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    meta["shards"][0]["bytes"] = shard.stat().st_size
    (batch / BATCH_JSON).write_text(json.dumps(meta))
    with pytest.raises(BatchError, match="unsafe tar member "):
        verify_batch(batch)


def test_one_unreadable_batch_does_not_hide_the_others(store: Store, tmp_path: Path) -> None:
    good, _ = make_batch(tmp_path / "out", run_id="run-1")
    bad, _ = make_batch(tmp_path / "out", run_id="run-2", seed=1)
    publish_batch(store, good, DAY)
    prefix = publish_batch(store, bad, DAY)["prefix"]
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    store.put_file(garbage, prefix + BATCH_JSON)
    one, two = list_batches(store)
    assert (one.run_id, one.n_images, one.error) == ("run-1", 7, None)
    assert two.run_id == "run-2" and two.n_images is None
    assert f"{prefix}{BATCH_JSON} is not a valid batch.json (Invalid JSON" in two.error
    assert "batches_" not in two.error  # the real key, not the temporary download's name


def test_pull_refuses_to_overwrite_different_content(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    publish_batch(store, batch, DAY)
    target = tmp_path / "dest" / "run-1"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(BatchError, match="different content"):
        pull_batch(store, "run-1", tmp_path / "dest")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


# --- S3 specifics ----------------------------------------------------------------------------


@pytest.mark.parametrize("server_name", SERVERS)
def test_missing_bucket_is_a_clear_error(
    request: pytest.FixtureRequest, tmp_path: Path, server_name: str
) -> None:
    server = request.getfixturevalue(server_name)
    batch, _ = make_batch(tmp_path)
    store = S3Store("no-such-bucket-ensgan", "", server.endpoint_url, "us-east-1")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-ensgan' does not exist"):
        publish_batch(store, batch)
    with pytest.raises(StorageError, match="does not exist"):
        store.put_file(batch / BATCH_JSON, "x/batch.json")


@E2E
def test_multipart_upload_on_seaweedfs(seaweedfs, s3_bucket: Callable, tmp_path: Path) -> None:
    bucket = s3_bucket(seaweedfs)
    store = S3Store(bucket, "", seaweedfs.endpoint_url, "us-east-1", multipart_threshold=5 * MIB)
    big = tmp_path / "big.bin"
    payload = os.urandom(11 * MIB)
    big.write_bytes(payload)
    store.put_file(big, "blobs/big.bin")
    etag = seaweedfs.client().head_object(Bucket=bucket, Key="blobs/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # three 5 MiB-sized parts: a multipart upload
    store.get_file("blobs/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload

    # The publish path with every shard above the threshold, then a verified pull.
    tiny = S3Store(bucket, "mp", seaweedfs.endpoint_url, "us-east-1", multipart_threshold=1024)
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(tiny, batch, DAY)["prefix"]
    head = seaweedfs.client().head_object(Bucket=bucket, Key=f"mp/{prefix}shard-00000.tar")
    assert head["ETag"].strip('"').endswith("-1")
    assert verify_batch(pull_batch(tiny, "run-1", tmp_path / "pulled")) == 7


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Store("some-bucket", "", "http://127.0.0.1:9", "us-east-1", max_attempts=1)
    with pytest.raises(StorageError, match="no S3 credentials found"):
        store.list_keys()


def test_access_denied_is_a_clear_error_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETLOOKING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    store = S3Store("locked-bucket", "p", "http://127.0.0.1:9", "us-east-1")
    with Stubber(store._client) as stub:
        stub.add_client_error("list_objects_v2", "AccessDenied", "Access Denied", 403)
        with pytest.raises(StorageError, match="access denied to bucket 'locked-bucket'") as err:
            store.list_keys()
    assert "super-secret-value" not in str(err.value)
    assert "AKIDSECRETLOOKING" not in str(err.value)


def test_unreachable_endpoint_is_a_clear_error_and_redacted(unused_port: int) -> None:
    store = S3Store(
        "bucket", "", f"http://user:hunter2@127.0.0.1:{unused_port}", "us-east-1", max_attempts=1
    )
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as err:
        store.list_keys()
    assert "hunter2" not in str(err.value)
    assert f"127.0.0.1:{unused_port}" in str(err.value)


# --- open_store and LocalStore ---------------------------------------------------------------


def test_open_store_picks_backend(tmp_path: Path) -> None:
    s3 = open_store(StorageConfig(url="s3://my-bucket/a/b", endpoint_url="http://127.0.0.1:9"))
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("my-bucket", "a/b")
    assert s3.url == "s3://my-bucket/a/b"
    local = open_store(StorageConfig(url="store"), root=tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path / "store"
    absolute = open_store(StorageConfig(url=str(tmp_path / "abs")), root=Path("/elsewhere"))
    assert isinstance(absolute, LocalStore) and absolute.root == tmp_path / "abs"


def test_local_store_replaces_atomically_and_lists_sorted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    assert store.list_keys() == [] and not (tmp_path / "s").exists()
    src = tmp_path / "f"
    for key, text in [("b/2", "x"), ("a/1", "y"), ("b/1", "z"), ("b/2", "new")]:
        src.write_text(text)
        store.put_file(src, key)
    assert store.list_keys() == ["a/1", "b/1", "b/2"]
    assert store.list_keys("b/") == ["b/1", "b/2"]
    store.get_file("b/2", tmp_path / "got")
    assert (tmp_path / "got").read_text() == "new"
    assert [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()] != []
    assert not [p for p in (tmp_path / "s").rglob("*") if p.name.endswith(".tmp")]
    # A write in flight (atomic_write's temp name) is never listed.
    (tmp_path / "s" / "b" / ".3.0123abcd.tmp").write_text("half")
    assert store.list_keys("b/") == ["b/1", "b/2"]
    with pytest.raises(StorageError, match="no object"):
        store.get_file("missing", tmp_path / "x")


def test_pull_names_an_incomplete_earlier_pull(store: Store, tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    publish_batch(store, batch, DAY)
    target = tmp_path / "dest" / "run-1"
    target.mkdir(parents=True)
    (target / "shard-00000.tar").write_bytes(b"half")
    with pytest.raises(BatchError, match="incomplete earlier pull"):
        pull_batch(store, "run-1", tmp_path / "dest")


# --- the S3 waits: params, then the environment ------------------------------------------------


def test_open_store_passes_the_waits_and_the_environment_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = StorageConfig(url="s3://my-bucket", endpoint_url="http://127.0.0.1:9", read_timeout=7)
    store = open_store(cfg)
    assert (store.read_timeout, store.connect_timeout, store.max_attempts) == (7, 10, 4)
    client_cfg = store._client.meta.config
    assert (client_cfg.read_timeout, client_cfg.connect_timeout) == (7, 10)
    assert client_cfg.retries == {"mode": "standard", "total_max_attempts": 4}
    monkeypatch.setenv("ENSGAN_S3_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("ENSGAN_S3_MAX_ATTEMPTS", "2")
    store = open_store(cfg)
    assert (store.read_timeout, store.max_attempts) == (2.5, 2)


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("ENSGAN_S3_READ_TIMEOUT", "soon", "ENSGAN_S3_READ_TIMEOUT='soon' is not a number"),
        ("ENSGAN_S3_READ_TIMEOUT", "0", "ENSGAN_S3_READ_TIMEOUT=0.0: Input should be greater"),
        ("ENSGAN_S3_READ_TIMEOUT", "inf", "ENSGAN_S3_READ_TIMEOUT=inf: Input should be a finite"),
        ("ENSGAN_S3_MAX_ATTEMPTS", "1.5", "ENSGAN_S3_MAX_ATTEMPTS='1.5' is not a number"),
        ("ENSGAN_S3_MAX_ATTEMPTS", "100", "ENSGAN_S3_MAX_ATTEMPTS=100: Input should be less"),
    ],
)
def test_a_bad_wait_in_the_environment_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=re.escape(says)):
        open_store(StorageConfig(url="s3://my-bucket", endpoint_url="http://127.0.0.1:9"))


@pytest.mark.parametrize(
    "raw",
    [{"read_timeout": 0}, {"connect_timeout": -1}, {"max_attempts": 0}, {"read_timeout": 10**6}],
)
def test_waits_out_of_range_in_params_are_refused(raw: dict) -> None:
    with pytest.raises(ValidationError):
        StorageConfig(**raw)


def test_publish_and_pull_say_which_file_they_move(tmp_path: Path, caplog) -> None:
    store = LocalStore(tmp_path / "store")
    batch, _ = make_batch(tmp_path / "out")
    with caplog.at_level(logging.INFO, "ensgan.io.batches"):
        publish_batch(store, batch, DAY)
        pull_batch(store, "run-1", tmp_path / "dest")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("uploading shard-00000.tar (1 of 5, ") for line in lines), lines
    assert any(line.startswith("uploading manifest.jsonl (5 of 5, ") for line in lines), lines
    assert any(line.startswith("downloading shard-00002.tar (3 of 3) from ") for line in lines)


def test_size_is_the_objects_size_or_a_clear_error(store: Store, tmp_path: Path) -> None:
    local = tmp_path / "obj.bin"
    local.write_bytes(b"x" * 1234)
    store.put_file(local, "a/obj.bin")
    assert store.size("a/obj.bin") == 1234
    with pytest.raises(StorageError, match="no object 'a/missing.bin'"):
        store.size("a/missing.bin")


class _Recording:
    """A store that records every key it downloads."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.url, self.got = inner, inner.url, []

    def get_file(self, key: str, local: Path) -> None:
        self.got.append(key)
        self.inner.get_file(key, local)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_pull_refuses_a_shard_larger_than_batch_json_says_before_downloading_it(
    store: Store, tmp_path: Path
) -> None:
    batch, _ = make_batch(tmp_path / "out")
    prefix = publish_batch(store, batch, DAY)["prefix"]
    big = tmp_path / "big.tar"
    big.write_bytes((batch / "shard-00001.tar").read_bytes() + b"\0" * 100_000)
    store.put_file(big, prefix + "shard-00001.tar")
    said = json.loads((batch / BATCH_JSON).read_text())["shards"][1]["bytes"]
    recording = _Recording(store)
    with pytest.raises(BatchError, match=rf"shard-00001\.tar is {said + 100_000} bytes, "
                       rf"batch\.json says {said}: refused, not downloaded"):  # fmt: skip
        pull_batch(recording, "run-1", tmp_path / "pulled")
    assert prefix + "shard-00001.tar" not in recording.got
    assert not (tmp_path / "pulled" / "run-1").exists()
    with pytest.raises(BatchError, match="refused, not downloaded"):  # --repair alike
        (tmp_path / "pulled" / "run-1").mkdir()
        repair_batch(recording, "run-1", tmp_path / "pulled")
    assert prefix + "shard-00001.tar" not in recording.got


def test_an_oversized_batch_json_is_listed_unreadable_without_downloading_it(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch, _ = make_batch(tmp_path / "out")
    publish_batch(store, batch, DAY)
    monkeypatch.setattr(BatchRecord, "max_bytes", 100)  # the real one is megabytes
    recording = _Recording(store)
    (info,) = list_batches(recording)
    assert info.n_images is None and "refused, not downloaded" in info.error
    with pytest.raises(BatchError, match="refused, not downloaded"):
        pull_batch(recording, "run-1", tmp_path / "pulled")
    assert recording.got == []
