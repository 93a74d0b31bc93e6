"""Atomic directories (every stage's outputs swap in whole) and the typed card readers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ensgan.errors import CardError
from ensgan.io.cards import DataCard, MemberCard, read_card, read_card_if_any, write_card
from ensgan.io.files import atomic_dir, atomic_write, recover_dir


def _tree(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


def test_atomic_dir_swaps_in_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as work:
        (work / "a.txt").write_text("1")
        assert not target.exists()  # nothing visible until the block ends
    assert _tree(target) == {"a.txt": "1"}
    with atomic_dir(target) as work:
        (work / "b.txt").write_text("2")
    assert _tree(target) == {"b.txt": "2"}  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_keeps_the_old_directory_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as work:
        (work / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as work:
        (work / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert _tree(target) == {"a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_without_replace_refuses_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError), atomic_dir(target, replace=False) as work:
        (work / "x").write_text("new")
    assert _tree(target) == {"keep.txt": "mine"}


def test_a_failure_between_the_renames_puts_the_old_directory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as work:
        (work / "a.txt").write_text("old")
    real_replace = os.replace

    def fail_second(src, dst):  # the old one moved aside, then the new one fails to land
        if Path(src).name == ".out.partial":
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(target) as work:
        (work / "a.txt").write_text("new")
    monkeypatch.undo()
    assert _tree(target) == {"a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_card_readers_recover_a_torn_swap(tmp_path: Path) -> None:
    """A crash between the renames left the previous output aside: readers still find it."""
    write_card(tmp_path / ".prepared.old", DataCard(**DATA))
    assert read_card(DataCard, tmp_path / "prepared").sha256 == "a" * 64
    assert (tmp_path / "prepared" / "card.json").is_file()


def test_recover_dir_undoes_a_torn_swap(tmp_path: Path) -> None:
    target = tmp_path / "out"
    old = tmp_path / ".out.old"
    old.mkdir()
    (old / "a.txt").write_text("old")
    recover_dir(target)
    assert _tree(target) == {"a.txt": "old"} and not old.exists()
    recover_dir(target)  # nothing torn: nothing changes
    assert _tree(target) == {"a.txt": "old"}


def test_atomic_write_gives_the_umask_mode_not_0600(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


# Cards.

DATA = {
    "source": "digits", "path": None, "shape": [10, 1, 8, 8], "dtype": "uint8", "labels": True,
    "n_classes": 10, "n_train": 8, "n_stack": 1, "n_calibrate": 1, "n_evaluate": 2,
    "sha256": "a" * 64,
}  # fmt: skip


def test_cards_round_trip_and_allow_newer_fields(tmp_path: Path) -> None:
    card = DataCard(**DATA)
    write_card(tmp_path, card)
    assert read_card(DataCard, tmp_path) == card
    (tmp_path / "card.json").write_text(json.dumps({**DATA, "from_a_newer_version": 1}))
    assert read_card(DataCard, tmp_path).sha256 == "a" * 64


def test_missing_card_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ensgan prepare"):
        read_card(DataCard, tmp_path)
    with pytest.raises(FileNotFoundError, match="ensgan train"):
        read_card(MemberCard, tmp_path)
    assert read_card_if_any(MemberCard, tmp_path) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({k: v for k, v in DATA.items() if k != "sha256"}), "sha256"),
        (json.dumps({**DATA, "n_train": "many"}), "n_train"),
        (json.dumps([1, 2]), "DataCard"),
    ],
)
def test_bad_card_is_a_card_error_naming_the_field(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "card.json").write_text(text)
    with pytest.raises(CardError, match=match) as info:
        read_card(DataCard, tmp_path)
    assert str(tmp_path / "card.json") in str(info.value)
