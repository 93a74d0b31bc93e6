"""Hostile shards, built as a publisher would (batch.json and the manifest re-signed to match):
verification reads them as a consumer will, and refuses any whose members are not exactly the
manifest's, plain, sized and each once."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from ensgan.errors import BatchError
from ensgan.io.batches import BATCH_JSON, MANIFEST, verify_batch
from ensgan.io.shards import row_bytes
from tests.helpers import make_batch, manifest

SHARD = "shard-00000.tar"
MIB = 1 << 20


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _entry(name: str, data: bytes, fmt: int = tarfile.USTAR_FORMAT, **pax: str) -> bytes:
    """One member as tar bytes: its header (pax headers first, if any) and its data."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.pax_headers = len(data), 0o644, pax
    return info.tobuf(fmt) + _pad(data)


def _gnu_sparse(name: str, data: bytes, realsize: int) -> bytes:
    """An old-GNU sparse member (type 'S'): `data` stored at offset 0, `realsize` declared."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = len(data), 0o644, tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # the one region: offset,
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # its stored bytes
    header[483:495] = tarfile.itn(realsize, 12, tarfile.GNU_FORMAT)  # and the size it claims
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % tarfile.calc_chksums(bytes(header))[0]
    return bytes(header) + _pad(data)


def _members(batch: Path) -> dict[str, bytes]:
    with tarfile.open(batch / SHARD) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _publish_as(batch: Path, entries: list[bytes], rows: list[dict] | None = None) -> None:
    """Replace shard 0 with `entries` (and the manifest with `rows`), then sign batch.json
    over them, as a hostile publisher would: every checksum it lists matches."""
    shard = batch / SHARD
    shard.write_bytes(b"".join(entries) + b"\0" * (2 * tarfile.BLOCKSIZE))
    if rows is not None:
        (batch / MANIFEST).write_text("".join(row_bytes(r).decode() + "\n" for r in rows))
    meta = json.loads((batch / BATCH_JSON).read_text())
    meta["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    meta["shards"][0]["bytes"] = shard.stat().st_size
    (batch / BATCH_JSON).write_text(json.dumps(meta))


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    return make_batch(tmp_path / "out", n=4)[0]  # shard 0: images 0, 1, 2


def _genuine(batch: Path) -> list[tuple[str, bytes]]:
    return list(_members(batch).items())


def test_the_genuine_shard_rebuilt_by_hand_verifies(batch: Path) -> None:
    """The builder itself is faithful: what it writes from the genuine members verifies."""
    _publish_as(batch, [_entry(n, d) for n, d in _genuine(batch)])
    assert verify_batch(batch) == 4


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_a_sparse_member_is_refused_before_it_is_expanded(batch: Path, kind: str) -> None:
    """A few stored bytes declared as a much larger PNG, its row re-signed over the expanded
    content: tarfile would hand every byte of it to a reader."""
    rows = manifest(batch)
    expanded = b"\x89PNG" + b"\0" * (MIB - 4)
    rows[0] |= {"sha256": hashlib.sha256(expanded).hexdigest(), "bytes": MIB}
    if kind == "gnu":
        sparse = _gnu_sparse("000000.png", b"\x89PNG", MIB)
    else:
        pax = {"GNU.sparse.map": "0,4", "GNU.sparse.size": str(MIB)}
        sparse = _entry("000000.png", b"\x89PNG", tarfile.PAX_FORMAT, **pax)
    rest = [_entry(n, d) for n, d in _genuine(batch)[2:]]
    _publish_as(batch, [sparse, _entry("000000.json", row_bytes(rows[0])), *rest], rows)
    with tarfile.open(batch / SHARD) as tar:  # the attack is real: it expands when read
        assert len(tar.extractfile("000000.png").read()) == MIB
    with pytest.raises(BatchError, match=r"unsafe tar member '000000\.png' \(sparse\)"):
        verify_batch(batch)


@pytest.mark.parametrize("signed", ["first", "last"])
def test_a_duplicate_member_name_is_refused(batch: Path, signed: str) -> None:
    """Two copies of 000000.png, the manifest signing one of them: a sequential reader
    (WebDataset) gets the first, a lookup by name the last. Neither passes."""
    rows, genuine = manifest(batch), _genuine(batch)
    evil = b"not the published image"
    if signed == "first":  # the evil copy first, its row (and sidecar) re-signed over it
        rows[0] |= {"sha256": hashlib.sha256(evil).hexdigest(), "bytes": len(evil)}
        head = [_entry("000000.png", evil), _entry("000000.json", row_bytes(rows[0]))]
        entries = [*head, _entry(*genuine[0]), *(_entry(n, d) for n, d in genuine[2:])]
    else:  # the signed copy first, the evil one after it
        entries = [_entry(n, d) for n, d in genuine]
        entries = [*entries[:2], _entry("000000.png", evil), *entries[2:]]
    _publish_as(batch, entries, rows)
    with tarfile.open(batch / SHARD) as tar:
        assert [m.name for m in tar.getmembers()].count("000000.png") == 2
    with pytest.raises(BatchError, match=r"a second copy of '000000\.png'"):
        verify_batch(batch)


def test_an_empty_member_name_is_refused(batch: Path) -> None:
    entries = [_entry(n, d) for n, d in _genuine(batch)]
    _publish_as(batch, [*entries[:2], _entry("", b"x"), *entries[2:]])
    with pytest.raises(BatchError, match=r"unsafe tar member '' \(not a plain file name\)"):
        verify_batch(batch)


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_member_no_manifest_row_lists_is_refused(batch: Path, where: str) -> None:
    entries = [_entry(n, d) for n, d in _genuine(batch)]
    extra = _entry("999999.png", b"unlisted")
    entries = [*entries[:2], extra, *entries[2:]] if where == "middle" else [*entries, extra]
    _publish_as(batch, entries)
    match = "unlisted '999999.png'" if where == "middle" else "'999999.png' is not listed"
    with pytest.raises(BatchError, match=match):
        verify_batch(batch)


def test_members_out_of_their_manifest_order_are_refused(batch: Path) -> None:
    genuine = _genuine(batch)
    swapped = [genuine[2], genuine[3], genuine[0], genuine[1], *genuine[4:]]
    _publish_as(batch, [_entry(n, d) for n, d in swapped])
    with pytest.raises(BatchError, match=r"000000\.png missing .*listed elsewhere"):
        verify_batch(batch)


def test_a_member_of_another_size_than_its_row_is_refused_before_reading(batch: Path) -> None:
    rows = manifest(batch)
    rows[0]["bytes"] += 1
    genuine = _genuine(batch)
    sidecar = _entry("000000.json", row_bytes(rows[0]))
    _publish_as(batch, [_entry(*genuine[0]), sidecar, *(_entry(*g) for g in genuine[2:])], rows)
    with pytest.raises(BatchError, match=r"000000\.png is \d+ bytes, manifest\.jsonl says"):
        verify_batch(batch)


def test_a_member_claiming_more_bytes_than_the_shard_holds_is_refused(batch: Path) -> None:
    """A header declaring a huge PNG in a small shard, its row saying the same size."""
    rows = manifest(batch)
    rows[2]["bytes"] = 1 << 32
    genuine = [_entry(n, d) for n, d in _genuine(batch)[:4]]
    info = tarfile.TarInfo("000002.png")
    info.size = 1 << 32
    claim = info.tobuf(tarfile.USTAR_FORMAT) + _pad(b"\x89PNG")
    _publish_as(batch, [*genuine, claim], rows)
    with pytest.raises(BatchError, match=r"000002\.png claims 4294967296 bytes, past the end"):
        verify_batch(batch)


def test_a_pax_header_is_refused(batch: Path) -> None:
    """Readers disagree on pax keywords (a `size` or `path` override): only plain headers."""
    genuine = _genuine(batch)
    first = _entry(*genuine[0], tarfile.PAX_FORMAT, comment="hello")
    _publish_as(batch, [first, *(_entry(n, d) for n, d in genuine[1:])])
    with pytest.raises(BatchError, match="pax or GNU extension header"):
        verify_batch(batch)


def test_members_hidden_after_the_end_of_the_archive_are_refused(batch: Path) -> None:
    """Past the end-of-archive blocks, where `tar --ignore-zeros` still reads."""
    entries = [_entry(n, d) for n, d in _genuine(batch)]
    hidden = b"\0" * (2 * tarfile.BLOCKSIZE) + _entry("000000.png", b"hidden")
    _publish_as(batch, [*entries, hidden])
    with tarfile.open(batch / SHARD, ignore_zeros=True) as tar:  # a lenient reader sees it
        assert [m.name for m in tar.getmembers()].count("000000.png") == 2
    with pytest.raises(BatchError, match="data after the archive's last member"):
        verify_batch(batch)


def test_a_sidecar_that_is_not_its_row_byte_for_byte_is_refused(batch: Path) -> None:
    genuine = _genuine(batch)
    forged = json.dumps(json.loads(genuine[1][1]) | {"member": "forged"}).encode()
    _publish_as(batch, [_entry(*genuine[0]), _entry("000000.json", forged),
                        *(_entry(n, d) for n, d in genuine[2:])])  # fmt: skip
    with pytest.raises(BatchError, match=r"sidecar 000000\.json missing or not its"):
        verify_batch(batch)


def test_a_manifest_row_naming_a_path_is_refused(batch: Path) -> None:
    rows = manifest(batch)
    rows[0]["file"] = "../000000.png"
    (batch / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BatchError, match=r"names file '\.\./000000\.png', not NNNNNN\.png"):
        verify_batch(batch)


def test_a_member_is_hashed_in_bounded_reads(batch: Path, monkeypatch) -> None:
    """No read of a PNG asks for more than a chunk, and none reads to the end unbounded."""
    import ensgan.io.shards as shards

    with tarfile.open(batch / SHARD) as tar:
        pngs = {m.offset_data for m in tar.getmembers() if m.name.endswith(".png")}
    asked: list[tuple[int, int]] = []
    real = tarfile.ExFileObject.read

    def read(self, size=-1):
        asked.append((self.raw.offset, size))  # where the member's data starts, in its shard
        return real(self, size)

    monkeypatch.setattr(shards, "CHUNK", 64)  # smaller than any of the PNGs
    monkeypatch.setattr(tarfile.ExFileObject, "read", read)
    assert verify_batch(batch) == 4
    png_reads = [n for at, n in asked if at in pngs]
    assert len(png_reads) > len(pngs) and all(0 <= n <= 64 for n in png_reads)
    assert all(n is not None and n >= 0 for _, n in asked)
