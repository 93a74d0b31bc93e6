"""Batches in the ecosystem's format: a published batch, pulled, reads with the
`webdataset` package and with Hugging Face `datasets` as image plus metadata, as it is."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ensgan.errors import BatchError
from ensgan.io.batches import BATCH_JSON, MANIFEST, publish_batch, pull_batch, verify_batch
from ensgan.io.storage import LocalStore
from tests.helpers import make_batch, manifest


@pytest.fixture
def pulled(tmp_path: Path) -> tuple[Path, np.ndarray]:
    batch, images = make_batch(tmp_path / "out", "run-1", n=7, channels=3)
    store = LocalStore(tmp_path / "store")
    publish_batch(store, batch, dt.date(2026, 3, 1))
    return pull_batch(store, "run-1", tmp_path / "dl"), images


def test_webdataset_yields_each_image_with_its_manifest_row(pulled) -> None:
    import webdataset as wds

    batch, images = pulled
    urls = [str(p) for p in sorted(batch.glob("shard-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "json"))
    rows = manifest(batch)
    assert len(samples) == len(rows) == 7
    for (image, meta), row, want in zip(samples, rows, images, strict=True):
        assert meta == row and {"member", "seed", "score", "sha256"} <= set(meta)
        np.testing.assert_array_equal(image, want.transpose(1, 2, 0))


def test_hugging_face_datasets_reads_the_shards(pulled, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # local files only, as a consumer offline would
    from datasets import load_dataset

    batch, images = pulled
    files = [str(p) for p in sorted(batch.glob("shard-*.tar"))]
    ds = load_dataset("webdataset", data_files={"train": files}, split="train",
                      cache_dir=str(tmp_path / "hf"))  # fmt: skip
    assert len(ds) == 7
    first = ds[0]
    assert first["json"]["member"] == "g0" and first["json"]["seed"] == 0
    np.testing.assert_array_equal(np.asarray(first["png"]), images[0].transpose(1, 2, 0))


def _rewrite_member(shard: Path, name: str, data: bytes) -> None:
    """Replace one member of a tar shard (a tampered sidecar)."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, content in members:
            content = data if m.name == name else content
            m.size = len(content)
            tar.addfile(m, io.BytesIO(content))


def test_a_tampered_sidecar_fails_verification(tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    shard = batch / "shard-00000.tar"
    _rewrite_member(shard, "000001.json", b'{"member": "forged"}')
    meta = json.loads((batch / BATCH_JSON).read_text())
    meta["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()  # re-signed
    (batch / BATCH_JSON).write_text(json.dumps(meta))
    with pytest.raises(BatchError, match="sidecar 000001.json"):
        verify_batch(batch)


def test_a_format_1_batch_still_verifies_and_an_unknown_format_is_refused(tmp_path: Path) -> None:
    """Batches published before sidecars (no `format`) still pull; a newer format says so."""
    batch, _ = make_batch(tmp_path / "out")
    meta = json.loads((batch / BATCH_JSON).read_text())
    for shard in meta["shards"]:  # strip the sidecars, as format 1 wrote the shards
        path = batch / shard["name"]
        with tarfile.open(path) as tar:
            pngs = [
                (m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".png")
            ]
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for m, content in pngs:
                tar.addfile(m, io.BytesIO(content))
        shard["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        shard["bytes"] = path.stat().st_size
    del meta["format"]
    (batch / BATCH_JSON).write_text(json.dumps(meta))
    assert verify_batch(batch) == 7
    meta["format"] = 99
    (batch / BATCH_JSON).write_text(json.dumps(meta))
    with pytest.raises(BatchError, match="format 99"):
        verify_batch(batch)
    assert (batch / MANIFEST).exists()


def test_pull_repair_downloads_only_the_damaged_shards(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ensgan.cli import app

    batch, _ = make_batch(tmp_path / "out", "run-1", n=9)  # three shards
    store = tmp_path / "store"
    publish_batch(LocalStore(store), batch, dt.date(2026, 3, 1))
    runner = CliRunner()
    pull = ["batches", "pull", "run-1", str(tmp_path / "dl"), "--store", str(store)]
    assert runner.invoke(app, pull).exit_code == 0
    local = tmp_path / "dl" / "run-1"
    damaged = bytearray((local / "shard-00001.tar").read_bytes())
    damaged[600] ^= 0xFF
    (local / "shard-00001.tar").write_bytes(bytes(damaged))
    (local / "shard-00002.tar").unlink()
    (local / "notes.txt").write_text("mine")
    intact = (local / "shard-00000.tar").stat().st_mtime_ns

    res = runner.invoke(app, pull)
    assert res.exit_code == 2 and "--repair" in res.output and "shard-00001.tar" in res.output
    res = runner.invoke(app, [*pull, "--repair"])
    assert res.exit_code == 0, res.output
    assert "downloaded shard-00001.tar, shard-00002.tar;" in res.output
    assert verify_batch(local) == 9
    assert (local / "shard-00000.tar").stat().st_mtime_ns == intact  # not downloaded again
    assert (local / "notes.txt").read_text() == "mine"
    res = runner.invoke(app, [*pull, "--repair"])
    assert "downloaded nothing (it was intact)" in res.output


def test_pull_repair_completes_an_interrupted_pull(tmp_path: Path) -> None:
    from ensgan.io.batches import repair_batch

    batch, _ = make_batch(tmp_path / "out", "run-1")
    store = LocalStore(tmp_path / "store")
    publish_batch(store, batch, dt.date(2026, 3, 1))
    local = tmp_path / "dl" / "run-1"
    local.mkdir(parents=True)
    (local / BATCH_JSON).write_bytes((batch / BATCH_JSON).read_bytes())  # then it was killed
    assert repair_batch(store, "run-1", tmp_path / "dl")[-1] == MANIFEST
    assert verify_batch(local) == 7


def test_read_manifest_is_a_dataframe_with_the_shared_fields(pulled) -> None:
    from ensgan.batches import read_manifest

    batch, _ = pulled
    df = read_manifest(batch)
    assert list(df["id"]) == list(range(7)) and len(df) == 7
    assert set(df["member"]) == {"g0", "g1"} and df["seed"].tolist() == list(range(7))
    assert (df["run_id"] == "run-1").all() and (df["data_sha256"] == "d" * 64).all()
    assert (df["method"] == "vote").all()
    assert read_manifest(batch / "manifest.jsonl").equals(df)
    assert df.groupby("member")["score"].count().to_dict() == {"g0": 4, "g1": 3}


def test_the_consumer_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    heavy = "{'torch', 'sklearn', 'prefect'}"
    code = f"import sys, ensgan.batches; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
