"""The store as Ray members see it (ensgan/orchestration/remote.py): an upload's files.json is
read like every store record, bounded and typed, and nothing it lists is trusted: names must
be safe relative paths, objects the size listed (judged before download), content the sha256
listed (judged after). Each hostile listing below is self-consistent where it can be, as an
attacker would write it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ensgan.errors import BatchError
from ensgan.io.storage import LocalStore
from ensgan.orchestration import remote

PREFIX = "data/sha/"  # a key in the work store (storage.work_url)


class CountingStore(LocalStore):
    """A local store that records what was downloaded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetched: list[str] = []

    def get_file(self, key: str, local: Path) -> None:
        self.fetched.append(key)
        super().get_file(key, local)


def _entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _hostile(tmp_path: Path, files: dict[str, bytes], listing: object) -> CountingStore:
    store = CountingStore(tmp_path / "store")
    for name, data in files.items():
        path = tmp_path / "store" / PREFIX / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    text = listing if isinstance(listing, str) else json.dumps(listing)
    (tmp_path / "store" / PREFIX).mkdir(parents=True, exist_ok=True)
    (tmp_path / "store" / PREFIX / remote.MANIFEST).write_text(text)
    return store


def test_an_upload_round_trips_and_is_not_uploaded_twice(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "checkpoint").mkdir(parents=True)
    (src / "card.json").write_text("{}")
    (src / "checkpoint" / "w.bin").write_bytes(b"\x00" * 3000)
    store = CountingStore(tmp_path / "store")
    assert remote.upload_tree(store, src, PREFIX) == 2
    assert remote.upload_tree(store, src, PREFIX) == 0
    listing = json.loads((tmp_path / "store" / PREFIX / remote.MANIFEST).read_text())
    assert listing["format"] == 3 and listing["files"]["checkpoint/w.bin"]["bytes"] == 3000
    assert remote.download_tree(store, PREFIX, tmp_path / "out")
    assert (tmp_path / "out" / "checkpoint" / "w.bin").read_bytes() == b"\x00" * 3000


class Cut(BaseException):
    """The writer dying (kill -9) between two of its puts: nothing after it runs."""


class DyingStore(CountingStore):
    """A local store whose writer dies after `puts` more puts."""

    puts: int | None = None

    def put_file(self, local: Path, key: str) -> None:
        if self.puts is not None:
            if self.puts == 0:
                raise Cut
            self.puts -= 1
        super().put_file(local, key)


def _member(folder: Path, step: int) -> Path:
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    (folder / "card.json").write_text(json.dumps({"step": step}))
    (folder / "checkpoint" / "g.bin").write_bytes(bytes([step]) * 2000)
    (folder / "losses.csv").write_text("step\n" + "".join(f"{i}\n" for i in range(step)))
    return folder


def _objects(tmp_path: Path) -> set[str]:
    root = tmp_path / "store" / PREFIX
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("puts", [0, 1, 2, 3])  # cut before, between and after the contents
def test_an_upload_cut_off_at_any_put_leaves_the_earlier_upload_whole(
    tmp_path: Path, puts: int
) -> None:
    store = DyingStore(tmp_path / "store")
    remote.upload_tree(store, _member(tmp_path / "v1", 1), PREFIX)
    store.puts = puts  # the next checkpoint's upload dies after this many puts
    with pytest.raises(Cut):
        remote.upload_tree(store, _member(tmp_path / "v2", 2), PREFIX)
    assert remote.download_tree(store, PREFIX, tmp_path / "got")  # the earlier one, whole
    for rel in ("card.json", "checkpoint/g.bin", "losses.csv"):
        assert (tmp_path / "got" / rel).read_bytes() == (tmp_path / "v1" / rel).read_bytes()
    store.puts = None
    remote.upload_tree(store, tmp_path / "v2", PREFIX)  # the next run's upload completes
    assert remote.download_tree(store, PREFIX, tmp_path / "got2")
    assert json.loads((tmp_path / "got2" / "card.json").read_text()) == {"step": 2}
    listing = remote.TreeManifest.model_validate_json(
        (tmp_path / "store" / PREFIX / remote.MANIFEST).read_text()
    )
    named = {remote.OBJECTS + e.sha256 for e in (listing.files or {}).values()}
    assert _objects(tmp_path) == named | {remote.MANIFEST}  # the cut-off objects removed


def test_an_older_ensgans_upload_is_read_and_replaced_by_the_next(tmp_path: Path) -> None:
    data = b"weights"
    store = _hostile(tmp_path, {"g.bin": data}, {"format": 2, "files": {"g.bin": _entry(data)}})
    assert remote.download_tree(store, PREFIX, tmp_path / "got")
    assert (tmp_path / "got" / "g.bin").read_bytes() == data
    assert remote.upload_tree(store, tmp_path / "got", PREFIX) == 1
    assert _objects(tmp_path) == {remote.OBJECTS + _entry(data)["sha256"], remote.MANIFEST}


def test_content_under_its_sha256_that_is_not_it_is_refused(tmp_path: Path) -> None:
    good = b"good"
    sha = _entry(good)["sha256"]
    listing = {"format": 3, "files": {"a.bin": _entry(good)}}
    store = _hostile(tmp_path, {remote.OBJECTS + sha: b"evil"}, listing)
    with pytest.raises(BatchError, match=r"does not match its sha256 in files.json"):
        remote.download_tree(store, PREFIX, tmp_path / "out")
    assert not (tmp_path / "out" / "a.bin").exists()


def test_a_listing_from_an_older_ensgan_is_no_upload(tmp_path: Path) -> None:
    data = b"x"
    store = _hostile(tmp_path, {"card.json": data}, {"card.json": _entry(data)["sha256"]})
    assert remote.download_tree(store, PREFIX, tmp_path / "out") is False
    assert store.fetched == [PREFIX + remote.MANIFEST]


def test_a_huge_listing_is_refused_from_the_stores_listing_unread(tmp_path: Path) -> None:
    big = {"format": 2, "files": {f"f{i:07d}": _entry(b"") for i in range(12_000)}}
    store = _hostile(tmp_path, {}, big)
    with pytest.raises(BatchError, match=r"files.json is \d+ bytes, more than .*not downloaded"):
        remote.download_tree(store, PREFIX, tmp_path / "out")
    assert store.fetched == []


@pytest.mark.parametrize(
    "listing",
    [
        "[" * 100_000 + "]" * 100_000,  # deep JSON
        '{"format": 2, "files": {"card.json": {"sha256": "ab", "bytes": 1}}}',  # not a sha256
        '{"format": 2, "files": {"card.json": {"sha256": "%s", "bytes": "1"}}}' % ("0" * 64),
        '{"format": 2, "files": {"card.json": {"sha256": "%s", "bytes": -1}}}' % ("0" * 64),
        '{"format": 4, "files": {}}',
        "not json",
    ],
)
def test_a_listing_that_is_not_one_is_one_line_naming_it(tmp_path: Path, listing: str) -> None:
    store = _hostile(tmp_path, {"card.json": b"x"}, listing)
    with pytest.raises(BatchError, match=r"files.json is not a valid files.json .*delete"):
        remote.download_tree(store, PREFIX, tmp_path / "out")
    assert store.fetched == [PREFIX + remote.MANIFEST]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name",
    [
        "../escaped",
        "a/../../escaped",
        "/tmp/escaped",
        "a\\..\\escaped",
        "./card.json",
        "a//b",
        "/".join(["d"] * 17) + "/f",  # deeper than any member's files
        "x" * 300,
        "card\x1b[2J.json",
    ],
)
def test_names_that_are_not_safe_relative_paths_are_refused(tmp_path: Path, name: str) -> None:
    data = b"payload"
    store = _hostile(tmp_path, {}, {"format": 2, "files": {name: _entry(data)}})
    with pytest.raises(BatchError, match=r"not a valid files.json"):
        remote.download_tree(store, PREFIX, tmp_path / "out" / "member")
    assert store.fetched == [PREFIX + remote.MANIFEST]
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_a_file_listed_as_a_folder_too_is_refused(tmp_path: Path) -> None:
    listing = {"format": 2, "files": {"a": _entry(b"1"), "a/b": _entry(b"2")}}
    store = _hostile(tmp_path, {}, listing)
    with pytest.raises(BatchError, match=r"'a/b' lies under 'a', a file"):
        remote.download_tree(store, PREFIX, tmp_path / "out")


def test_an_object_larger_than_listed_is_refused_before_download(tmp_path: Path) -> None:
    small, big = b"ok", b"\x00" * 100_000
    listing = {"format": 2, "files": {"a.bin": _entry(small), "b.bin": _entry(small)}}
    store = _hostile(tmp_path, {"a.bin": small, "b.bin": big}, listing)
    with pytest.raises(BatchError, match=r"b.bin is 100000 bytes, not the 2 .*not downloaded"):
        remote.download_tree(store, PREFIX, tmp_path / "out")
    assert PREFIX + "b.bin" not in store.fetched and PREFIX + "a.bin" in store.fetched


def test_content_that_is_not_its_sha256_is_refused_and_not_kept(tmp_path: Path) -> None:
    listing = {"format": 2, "files": {"a.bin": _entry(b"good")}}
    store = _hostile(tmp_path, {"a.bin": b"evil"}, listing)  # same size, other bytes
    with pytest.raises(BatchError, match=r"a.bin does not match its sha256 in files.json"):
        remote.download_tree(store, PREFIX, tmp_path / "out")
    assert not (tmp_path / "out" / "a.bin").exists()


def test_a_bad_listing_of_the_data_is_replaced_by_staging(tmp_path: Path) -> None:
    from ensgan.layout import Layout

    layout = Layout(tmp_path / "driver")
    layout.prepared.mkdir(parents=True)
    (layout.prepared / "train.npy").write_bytes(b"\x01" * 10)
    store = _hostile(tmp_path, {}, '{"format": 2, "files": {"../x": 1}}')
    prefix = remote.stage_data(store, layout, "sha")
    listing = json.loads((tmp_path / "store" / prefix / remote.MANIFEST).read_text())
    assert listing["files"]["train.npy"] == _entry(b"\x01" * 10)
