"""`data/prepared/`: uint8 (N, C, H, W) images, optional labels, a split per image and a card.

Each image belongs to one split (SPLITS): `train` for the members, `stack` to fit the stacker,
`calibrate` to calibrate it, `evaluate` as every metric's reference. Nothing is judged with
images an earlier step learned from.

Written once by `prepare` (swapped in whole), read by every later stage through
`load_prepared`, which checks the arrays against the card's sha256.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensgan.config import DataConfig
from ensgan.data.sources import class_names, load_source
from ensgan.errors import CardError, DataError
from ensgan.io.arrays import load_npy
from ensgan.io.cards import DataCard, read_card, write_card
from ensgan.io.files import atomic_dir

__all__ = [
    "DataError",
    "Prepared",
    "load_prepared",
    "prepare",
    "read_data_card",
    "sha256_arrays",
    "SPLITS",
    "split_holdout",
    "assign_splits",
]

SPLITS = ("train", "stack", "calibrate", "evaluate")  # split.npy holds each image's index here


@dataclass(frozen=True)
class Prepared:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray | None  # int64 (N,) or None
    split: np.ndarray  # int8 (N,): each image's index into SPLITS
    card: DataCard

    def mask(self, name: str) -> np.ndarray:
        return self.split == SPLITS.index(name)

    def images_of(self, name: str) -> np.ndarray:
        return self.images[self.mask(name)]

    def labels_of(self, name: str) -> np.ndarray | None:
        return None if self.labels is None else self.labels[self.mask(name)]

    @property
    def train_images(self) -> np.ndarray:
        return self.images_of("train")

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
    from sklearn.model_selection import train_test_split  # scikit-learn loads only to split

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


def assign_splits(
    n: int, labels: np.ndarray | None, fractions: dict[str, float], seed: int
) -> np.ndarray:
    """Each image's split (an index into SPLITS), cut one after another, each stratified by
    label where the classes allow: `fractions` are shares of all n images."""
    split = np.zeros(n, dtype=np.int8)
    rest = np.arange(n)
    left = 1.0
    for k, name in enumerate(SPLITS[1:], start=1):
        share = fractions[name] / left
        if share >= 1.0 or len(rest) < 2:
            raise DataError(f"too few images ({n}) for the configured data.splits")
        try:
            held = split_holdout(
                len(rest), None if labels is None else labels[rest], share, seed + k
            )
        except ValueError as exc:  # scikit-learn: a side of the split would be empty
            raise DataError(
                f"too few images ({n}) for the configured data.splits ({exc})"
            ) from None
        split[rest[held]] = k
        rest, left = rest[~held], left - fractions[name]
    if len(rest) < max(1, int(0.1 * n)):  # rounding must leave training its 10 %
        raise DataError(
            f"data.splits leave {len(rest)} of {n} images to train on; lower the fractions"
        )
    return split


def prepare(cfg: DataConfig, out_dir: Path, root: Path = Path(".")) -> DataCard:
    """Read the configured source and write `out_dir` (replaced only once complete)."""
    images, labels = load_source(cfg, root)
    if len(images) < 10:
        raise DataError(f"need at least 10 images, found {len(images)}")
    split = assign_splits(len(images), labels, cfg.splits.model_dump(), cfg.seed)
    counts = {f"n_{name}": int((split == k).sum()) for k, name in enumerate(SPLITS)}
    n_classes = int(labels.max()) + 1 if labels is not None else 0
    card = DataCard(
        source=cfg.source,
        path=cfg.path,
        shape=list(images.shape),
        dtype="uint8",
        labels=labels is not None,
        n_classes=n_classes,
        **counts,
        sha256=sha256_arrays(images, labels, split),
        class_names=class_names(cfg, root, n_classes),
    )
    if _prepared_already(out_dir, card):
        return card
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "split.npy", split)
        if labels is not None:
            np.save(tmp / "labels.npy", labels)
        write_card(tmp, card)
    return card


def _prepared_already(out_dir: Path, card: DataCard) -> bool:
    """Whether `out_dir` already holds exactly this data (then nothing is rewritten)."""
    try:
        return read_data_card(out_dir) == card and load_prepared(out_dir).card == card
    except (DataError, CardError, OSError, ValueError):
        return False


def read_data_card(data_dir: Path) -> DataCard:
    """The prepared data's card alone (cheap: no arrays are read)."""
    try:
        return read_card(DataCard, data_dir)
    except FileNotFoundError:
        raise DataError(f"no prepared data at {data_dir}: run `ensgan prepare` first") from None


def load_prepared(data_dir: Path) -> Prepared:
    """The prepared arrays, checked against the card's sha256."""
    card = read_data_card(data_dir)
    images = load_npy(data_dir / "images.npy")
    split = load_npy(data_dir / "split.npy")
    lp = data_dir / "labels.npy"
    labels = load_npy(lp) if lp.exists() else None
    if sha256_arrays(images, labels, split) != card.sha256:
        raise DataError(f"{data_dir}: contents do not match card.json's sha256 (re-run prepare)")
    return Prepared(images, labels, split, card)
