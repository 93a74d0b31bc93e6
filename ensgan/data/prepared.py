"""`data/prepared/`: uint8 (N, C, H, W) images, optional labels, a hold-out mask and a card.

Written once by `prepare` (swapped in whole), read by every later stage through
`load_prepared`, which checks the arrays against the card's sha256.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ensgan.config import DataConfig
from ensgan.data.sources import load_source
from ensgan.errors import DataError
from ensgan.io.cards import DataCard, read_card, write_card
from ensgan.io.files import atomic_dir

__all__ = [
    "DataError",
    "Prepared",
    "load_prepared",
    "prepare",
    "read_data_card",
    "sha256_arrays",
    "split_holdout",
]


@dataclass(frozen=True)
class Prepared:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray | None  # int64 (N,) or None
    holdout: np.ndarray  # bool (N,): kept out of member training (stacking, evaluation)
    card: DataCard

    @property
    def train_images(self) -> np.ndarray:
        return self.images[~self.holdout]

    @property
    def holdout_images(self) -> np.ndarray:
        return self.images[self.holdout]

    @property
    def n_classes(self) -> int:
        return self.card.n_classes


def sha256_arrays(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def split_holdout(n: int, labels: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Boolean hold-out mask, stratified by label when every class has at least two images."""
    idx = np.arange(n)
    stratify = None
    if labels is not None:
        counts = np.bincount(labels)
        n_held = math.ceil(n * fraction)  # as train_test_split counts
        if counts[counts > 0].min() >= 2 and min(n_held, n - n_held) >= len(counts[counts > 0]):
            stratify = labels
    _, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return mask


def prepare(cfg: DataConfig, out_dir: Path, root: Path = Path(".")) -> DataCard:
    """Read the configured source and write `out_dir` (replaced only once complete)."""
    images, labels = load_source(cfg, root)
    if len(images) < 10:
        raise DataError(f"need at least 10 images, found {len(images)}")
    holdout = split_holdout(len(images), labels, cfg.holdout_fraction, cfg.seed)
    card = DataCard(
        source=cfg.source,
        path=cfg.path,
        shape=list(images.shape),
        dtype="uint8",
        labels=labels is not None,
        n_classes=int(labels.max()) + 1 if labels is not None else 0,
        n_train=int((~holdout).sum()),
        n_holdout=int(holdout.sum()),
        sha256=sha256_arrays(images, labels, holdout),
    )
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "holdout.npy", holdout)
        if labels is not None:
            np.save(tmp / "labels.npy", labels)
        write_card(tmp, card)
    return card


def read_data_card(data_dir: Path) -> DataCard:
    """The prepared data's card alone (cheap: no arrays are read)."""
    try:
        return read_card(DataCard, data_dir)
    except FileNotFoundError:
        raise DataError(f"no prepared data at {data_dir}: run `ensgan prepare` first") from None


def load_prepared(data_dir: Path) -> Prepared:
    """The prepared arrays, checked against the card's sha256."""
    card = read_data_card(data_dir)
    images = np.load(data_dir / "images.npy", allow_pickle=False)
    holdout = np.load(data_dir / "holdout.npy", allow_pickle=False)
    lp = data_dir / "labels.npy"
    labels = np.load(lp, allow_pickle=False) if lp.exists() else None
    if sha256_arrays(images, labels, holdout) != card.sha256:
        raise DataError(f"{data_dir}: contents do not match card.json's sha256 (re-run prepare)")
    return Prepared(images, labels, holdout, card)
