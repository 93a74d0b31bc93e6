"""Where each stage reads and writes, relative to one project root (the README's stage table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def members(self) -> Path:
        return self.root / "models" / "members"

    def member(self, name: str) -> Path:
        return self.members / name

    @property
    def stacker(self) -> Path:
        return self.root / "models" / "stacker"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def key_figures(self) -> Path:
        """Each model's key figures, a file apiece: the DVC metrics (`dvc metrics show` prints a
        row per model), small enough to commit as the baseline `dvc metrics diff` compares with."""
        return self.reports / "key"

    @property
    def batches(self) -> Path:
        return self.root / "outputs" / "batches"

    @property
    def generated(self) -> Path:
        """Which batch the last `generate` wrote: what `publish` uploads."""
        return self.root / "outputs" / "generated.json"

    @property
    def published(self) -> Path:
        """Receipt of the last publish (what went where), for DVC and for humans."""
        return self.root / "outputs" / "published.json"
