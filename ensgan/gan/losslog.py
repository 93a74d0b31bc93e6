"""The loss log: an append-only CSV, flushed every row, cut back to the checkpoint on resume,
so an interrupted member's log loses and repeats no row."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

from ensgan.io.files import atomic_write

LOG_FIELDS = ["step", "kimg", "d_loss", "g_loss", "d_real", "d_fake", "seconds"]


def read_log(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def trim_log(path: Path, step: int) -> None:
    """Keep the header and the rows up to `step` (those the checkpoint has seen)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


class LossLog:
    """Append rows to `path` (created with a header when absent), flushing each one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> LossLog:
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, LOG_FIELDS)
        if new:
            self._writer.writeheader()
        return self

    def append(self, row: dict) -> None:
        self._writer.writerow(row)
        self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
