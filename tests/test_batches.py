"""Batches (ensgan/io/batches.py): two pulls into one folder, and manifest row ids."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

from ensgan.errors import BatchError, BusyError
from ensgan.io.batches import MANIFEST, publish_batch, pull_batch, repair_batch, verify_batch
from ensgan.io.storage import LocalStore, Store
from tests.helpers import make_batch, manifest
from tests.helpers import venv_tool as _venv_tool

DAY = dt.date(2026, 3, 14)


class _SecondPullMidway:
    """A store that, while the first pull downloads its first shard, starts a second pull
    of the same batch into the same folder and keeps what became of it."""

    def __init__(self, inner: Store, dest: Path) -> None:
        self.inner, self.url, self.dest = inner, inner.url, dest
        self.second: BaseException | Path | None = None

    def get_file(self, key: str, local: Path) -> None:
        self.inner.get_file(key, local)
        if key.endswith("shard-00000.tar") and self.second is None:
            try:
                self.second = pull_batch(self.inner, "run-1", self.dest)
            except (BatchError, BusyError) as exc:
                self.second = exc

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_second_pull_into_the_same_folder_is_refused_and_the_first_wins(
    tmp_path: Path,
) -> None:
    """Without the lock the second would remove the first's staging folder, and one of them
    would report the published batch as damaged."""
    batch, _ = make_batch(tmp_path / "out")
    store = LocalStore(tmp_path / "store")
    publish_batch(store, batch, DAY)
    racing = _SecondPullMidway(store, tmp_path / "dest")
    pulled = pull_batch(racing, "run-1", tmp_path / "dest")
    assert isinstance(racing.second, BusyError)
    assert "another `ensgan batches pull` of run-1" in str(racing.second)
    assert "damaged" not in str(racing.second)
    assert verify_batch(pulled) == 7
    assert pull_batch(store, "run-1", tmp_path / "dest") == pulled  # released: it is there


def test_a_held_pull_lock_refuses_pull_and_repair_in_one_line(tmp_path: Path) -> None:
    """What the user sees when another process holds the folder: exit 2, one line."""
    batch, _ = make_batch(tmp_path / "out")
    publish_batch(LocalStore(tmp_path / "store"), batch, DAY)
    dest = tmp_path / "dest"
    dest.mkdir()
    cmd = [_venv_tool("ensgan"), "batches", "pull", "run-1", str(dest),
           "--store", str(tmp_path / "store")]  # fmt: skip
    with FileLock(dest / ".run-1.pull.lock"):
        for extra in ([], ["--repair"]):
            res = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)
            assert res.returncode == 2, res.stderr
            assert res.stderr.strip().count("\n") == 0 and "wait for it to finish" in res.stderr
        assert not (dest / "run-1").exists()
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    assert verify_batch(dest / "run-1") == 7


def test_repair_takes_the_same_lock(tmp_path: Path) -> None:
    batch, _ = make_batch(tmp_path / "out")
    store = LocalStore(tmp_path / "store")
    publish_batch(store, batch, DAY)
    pulled = pull_batch(store, "run-1", tmp_path / "dest")
    with FileLock(tmp_path / "dest" / ".run-1.pull.lock"), pytest.raises(BusyError):
        repair_batch(store, "run-1", tmp_path / "dest")
    assert verify_batch(pulled) == 7


@pytest.mark.parametrize("bad", ["duplicate", "not an int"])
def test_rows_whose_ids_are_not_unique_integers_are_refused(tmp_path: Path, bad: str) -> None:
    batch, _ = make_batch(tmp_path / "out")
    rows = manifest(batch)
    rows[3]["id"] = 1 if bad == "duplicate" else "3"
    (batch / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    match = r"row ids \[1\] appear more than once" if bad == "duplicate" else "not integers"
    with pytest.raises(BatchError, match=match):
        verify_batch(batch)
