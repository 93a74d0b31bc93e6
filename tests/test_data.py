"""Dataset readers and `prepare`: digits, image folders, .npz files, the card and its sha256."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensgan.config import DataConfig
from ensgan.data.prepared import (
    DataError,
    assign_splits,
    load_prepared,
    prepare,
    split_holdout,
)
from ensgan.data.shaping import to_array
from ensgan.data.sources import load_source, read_folder, read_npz
from tests.helpers import lying_npy, png_header_only, write_image

# Helpers.


def independent_sha256(*arrays: np.ndarray | None) -> str:
    """The card's documented hash, recomputed here: (dtype, shape) then raw bytes, per array."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def folder_cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(source="folder", path=str(path), **{"image_size": 8, **kw})


def npz_cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(source="npz", path=str(path), **{"image_size": 8, **kw})


# Built-in digits.


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("digits") / "data" / "prepared"
    card = prepare(DataConfig(image_size=8, seed=0), out)
    return out, card


def test_digits_prepare_shape_labels_and_card(digits_dir: tuple[Path, dict]) -> None:
    out, card = digits_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "images.npy",
        "labels.npy",
        "split.npy",
    ]
    assert not list(out.parent.glob(".prepared.*"))  # no staging dir left behind
    d = load_prepared(out)
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == np.uint8
    assert d.images.min() == 0 and d.images.max() == 255  # 0..16 rescaled to the full range
    assert d.labels is not None and d.labels.dtype == np.int64
    assert sorted(np.unique(d.labels).tolist()) == list(range(10))
    assert d.n_classes == 10
    assert card.model_dump() == json.loads((out / "card.json").read_text())
    assert d.card == card
    assert card.shape == [1797, 1, 8, 8] and card.labels is True
    assert card.source == "digits" and card.dtype == "uint8"
    assert card.n_train + card.n_stack + card.n_calibrate + card.n_evaluate == 1797
    assert card.sha256 == independent_sha256(d.images, d.labels, d.split)


def test_digits_splits_fractions_and_stratification(digits_dir: tuple[Path, dict]) -> None:
    d = load_prepared(digits_dir[0])
    assert d.split.dtype == np.int8 and d.split.shape == (1797,)
    assert set(np.unique(d.split).tolist()) == {0, 1, 2, 3}
    for name, fraction in (("stack", 0.1), ("calibrate", 0.1), ("evaluate", 0.2)):
        n = int(d.mask(name).sum())
        assert n == getattr(d.card, f"n_{name}") == len(d.images_of(name))
        assert abs(n - fraction * 1797) <= 2, (name, n)
        for k in range(10):  # stratified: each class in its share
            in_class = d.labels == k
            held = (d.mask(name) & in_class).sum()
            assert abs(held - fraction * in_class.sum()) <= 2, (name, k, held)
    assert len(d.train_images) == d.card.n_train == (d.split == 0).sum()
    np.testing.assert_array_equal(d.labels_of("evaluate"), d.labels[d.split == 3])


def test_digits_are_deterministic_and_seeded(tmp_path: Path, digits_dir: tuple[Path, dict]) -> None:
    again = prepare(DataConfig(image_size=8, seed=0), tmp_path / "a")
    assert again.sha256 == digits_dir[1].sha256
    other = prepare(DataConfig(image_size=8, seed=1), tmp_path / "b")
    assert other.sha256 != again.sha256  # a different hold-out split
    splits = {"stack": 0.2, "calibrate": 0.2, "evaluate": 0.1}
    frac = prepare(DataConfig(image_size=8, splits=splits), tmp_path / "c")
    assert frac.n_evaluate == math.ceil(1797 * 0.1)
    assert abs(frac.n_stack - 0.2 * 1797) <= 2 and abs(frac.n_calibrate - 0.2 * 1797) <= 2


def test_digits_resized() -> None:
    images, labels = load_source(DataConfig(image_size=16))
    assert images.shape == (1797, 1, 16, 16) and images.dtype == np.uint8
    assert labels is not None and len(labels) == 1797


def test_load_prepared_returns_what_the_source_and_split_give(
    digits_dir: tuple[Path, dict],
) -> None:
    """What comes back is the source, resized, with the seeded split: computed independently."""
    src, card = digits_dir
    cfg = DataConfig(image_size=8, seed=0)
    images, labels = load_source(cfg)
    split = assign_splits(len(images), labels, cfg.splits.model_dump(), cfg.seed)
    d = load_prepared(src)
    np.testing.assert_array_equal(d.images, images)
    np.testing.assert_array_equal(d.labels, labels)
    np.testing.assert_array_equal(d.split, split)
    assert d.card == card


def test_load_prepared_detects_tampering(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(DataConfig(image_size=8), out)
    images = np.load(out / "images.npy")
    images[0, 0, 0, 0] ^= 1  # one bit of one pixel
    np.save(out / "images.npy", images)
    with pytest.raises(DataError, match="sha256"):
        load_prepared(out)


def test_load_prepared_detects_tampered_split(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(DataConfig(image_size=8), out)
    split = np.load(out / "split.npy")
    np.save(out / "split.npy", (split + 1) % 4)
    with pytest.raises(DataError, match="sha256"):
        load_prepared(out)


def test_load_prepared_without_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepare"):
        load_prepared(tmp_path / "nothing")


# A folder of PNG/JPEG images.


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", 10 * i)
        write_image(tmp_path / f"pic{i}.jpg", 100 + 10 * i)
    (tmp_path / "notes.txt").write_text("not an image")  # ignored
    images, labels = read_folder(tmp_path, 8, 1)
    assert labels is None
    assert images.shape == (6, 1, 8, 8) and images.dtype == np.uint8


def test_class_subfolders_give_labels(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "cat" / f"{i}.png", 50)
        write_image(tmp_path / "dog" / f"{i}.jpeg", 200)
        write_image(tmp_path / "eel" / f"{i}.PNG", 120)
    images, labels = read_folder(tmp_path, 8, 1)
    assert labels is not None
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted files, sorted class names
    means = images.reshape(9, -1).mean(axis=1)
    assert np.allclose(means[:3], 50, atol=1) and np.allclose(means[6:], 120, atol=1)
    assert np.allclose(means[3:6], 200, atol=3)  # JPEG: lossy


def test_the_classes_are_named_after_their_folders(tmp_path: Path) -> None:
    from ensgan.config import DataConfig
    from ensgan.data.sources import class_names

    for i in range(4):
        write_image(tmp_path / "data" / "cat" / f"{i}.png", 50)
        write_image(tmp_path / "data" / "dog" / f"{i}.png", 200)
    cfg = DataConfig(source="folder", path="data", image_size=8)
    assert class_names(cfg, tmp_path, 2) == ["cat", "dog"]
    _, labels = read_folder(tmp_path / "data", 8, 1)
    assert labels.max() + 1 == len(class_names(cfg, tmp_path, 2))  # one name per label
    assert class_names(DataConfig(source="digits"), tmp_path, 10) is None  # digits name themselves


def test_images_mixed_into_root_and_subfolders_have_no_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "0.png", 1)
    write_image(tmp_path / "b" / "0.png", 2)
    write_image(tmp_path / "loose.png", 3)
    assert read_folder(tmp_path, 8, 1)[1] is None


def test_rgb_converted_to_grayscale_and_resized(tmp_path: Path) -> None:
    color = (200, 100, 50)
    write_image(tmp_path / "rgb.png", color, size=(20, 12))
    write_image(tmp_path / "rgb.jpg", color, size=(5, 9))
    gray, _ = read_folder(tmp_path, 8, 1)
    assert gray.shape == (2, 1, 8, 8)
    expected = np.asarray(Image.new("RGB", (1, 1), color).convert("L"))[0, 0]
    assert np.all(gray[1] == expected)  # the PNG (sorted after .jpg), lossless
    assert np.all(np.abs(gray[0].astype(int) - int(expected)) <= 3)


def test_rgb_kept_with_three_channels(tmp_path: Path) -> None:
    color = (200, 100, 50)
    write_image(tmp_path / "rgb.png", color, size=(16, 16))
    write_image(tmp_path / "gray.png", 77, size=(4, 4))
    write_image(tmp_path / "rgba.png", (10, 20, 30, 255), mode="RGBA")
    write_image(tmp_path / "pal.png", 5, mode="P")
    rgb, _ = read_folder(tmp_path, 8, 3)
    assert rgb.shape == (4, 3, 8, 8)
    by_name = dict(zip(["gray", "pal", "rgb", "rgba"], rgb, strict=True))
    assert [int(by_name["rgb"][c].mean()) for c in range(3)] == list(color)
    assert np.all(by_name["gray"] == 77)  # grayscale replicated to 3 channels
    assert [int(by_name["rgba"][c, 0, 0]) for c in range(3)] == [10, 20, 30]


def test_a_folder_of_large_photos_is_resized_one_photo_at_a_time(tmp_path: Path) -> None:
    """Each image is resized as soon as it is read, so reading the folder holds about one
    photo at full size, never all of them; and the result is exactly what resizing the
    decoded photos all together gives."""
    import tracemalloc

    width, height, n = 1200, 1000, 6
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        photo = np.stack([(xx + 40 * i) % 256, (yy * 3) % 256, (xx ^ yy) % 256], axis=-1)
        Image.fromarray(photo.astype(np.uint8)).save(tmp_path / f"{i}.png")
    full = width * height * 3
    tracemalloc.start()
    try:
        images, labels = read_folder(tmp_path, 16, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One photo in flight costs about two copies of it (Pillow's bytes, joined from chunks);
    # holding the folder's six until the resize would cost six or more.
    assert peak < 3 * full, f"{peak / full:.1f} photos' worth of memory at peak: held whole"
    decoded = [np.asarray(Image.open(tmp_path / f"{i}.png")) for i in range(n)]
    assert np.array_equal(images, to_array(decoded, 16, 3)) and labels is None


def test_folder_prepare_end_to_end(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    for i in range(6):
        write_image(src / "a" / f"{i}.png", (10 * i, 0, 0), size=(32, 32))
        write_image(src / "b" / f"{i}.jpg", 200, size=(9, 9))
    out = tmp_path / "data" / "prepared"
    splits = {"stack": 0.17, "calibrate": 0.17, "evaluate": 0.34}
    card = prepare(folder_cfg(Path("imgs"), channels=3, splits=splits), out, root=tmp_path)
    assert card.shape == [12, 3, 8, 8] and card.labels is True and card.n_classes == 2
    assert card.path == "imgs"
    d = load_prepared(out)
    assert d.labels.tolist() == [0] * 6 + [1] * 6
    held = d.mask("evaluate")
    assert 4 <= held.sum() <= 5  # 0.34 of 12, as scikit-learn rounds a stratified split
    assert abs((held & (d.labels == 0)).sum() - (held & (d.labels == 1)).sum()) <= 1
    assert d.card.n_train >= 2


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "good.png", 5)
    bad = tmp_path / "broken.png"
    bad.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(DataError) as info:
        read_folder(tmp_path, 8, 1)
    assert str(bad) in str(info.value)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    good = write_image(tmp_path / "ok.png", 5, size=(64, 64))
    bad = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as info:
        read_folder(tmp_path, 8, 1)
    assert str(bad) in str(info.value) and str(good) not in str(info.value)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no PNG/JPEG"):
        read_folder(tmp_path, 8, 1)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_folder(tmp_path / "absent", 8, 1)


def test_too_few_images(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
    with pytest.raises(DataError, match="at least 10"):
        prepare(folder_cfg(tmp_path / "imgs"), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


# .npz files.


def test_npz_uint8_without_labels(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, images=images)
    raw, labels = read_npz(path)
    assert labels is None
    np.testing.assert_array_equal(raw, images)
    arr, _ = load_source(npz_cfg(path))
    np.testing.assert_array_equal(arr[:, 0], images)  # 8x8 grayscale: untouched


def test_npz_float_unit_range_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((12, 8, 8, 3)).astype(np.float32)
    images[0, 0, 0] = [0.0, 0.5, 1.0]
    labels = np.arange(12) % 3
    path = tmp_path / "d.npz"
    np.savez_compressed(path, images=images, labels=labels)
    raw, got = read_npz(path)
    assert raw.dtype == np.uint8 and raw.shape == (12, 8, 8, 3)
    assert raw[0, 0, 0].tolist() == [0, 128, 255]
    np.testing.assert_array_equal(raw, np.round(images * 255.0).astype(np.uint8))
    assert got.dtype == np.int64 and got.tolist() == labels.tolist()
    card = prepare(npz_cfg(path, channels=3), tmp_path / "prepared")
    assert card.shape == [12, 3, 8, 8] and card.n_classes == 3
    d = load_prepared(tmp_path / "prepared")
    np.testing.assert_array_equal(d.images, raw.transpose(0, 3, 1, 2))


def test_npz_float_in_minus1_1_is_rescaled(tmp_path: Path) -> None:
    images = np.zeros((10, 8, 8), np.float32)
    images[0, 0, 0], images[0, 0, 1] = -1.0, 1.0
    path = tmp_path / "d.npz"
    np.savez(path, images=images)
    raw, _ = read_npz(path)
    assert raw[0, 0, 0] == 0 and raw[0, 0, 1] == 255 and raw[1, 0, 0] in (127, 128)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.full((10, 8, 8), 300.0), None, r"must be in \[0, 1\] or \[-1, 1\]"),
        (np.full((10, 8, 8), np.nan), None, "NaN"),
        (np.zeros((10, 8, 8), np.uint8), np.eye(10, dtype=int), "labels"),
        (np.zeros((10, 8, 8), np.uint8), -np.ones(10, dtype=int), "non-negative"),
        (np.zeros((10, 8, 8), np.uint8), np.zeros(10) + 0.5, "integers"),
    ],
)
def test_npz_bad_values_are_refused(tmp_path: Path, images, labels, match: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=images, **({} if labels is None else {"labels": labels}))
    with pytest.raises(DataError, match=match):
        read_npz(path)


def test_npy_instead_of_npz_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((10, 8, 8), np.uint8))
    with pytest.raises(DataError, match="not a .npz"):
        read_npz(path)


def test_npz_without_images(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, pictures=np.zeros((10, 8, 8), np.uint8))
    with pytest.raises(DataError, match="images") as info:
        read_npz(path)
    assert str(path) in str(info.value) and "pictures" in str(info.value)


def test_npz_label_length_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((10, 8, 8), np.uint8), labels=np.zeros(9, np.int64))
    with pytest.raises(DataError, match=r"must be 10 integers .* \(9,\)"):
        read_npz(path)


@pytest.mark.parametrize("shape", [(0, 8, 8), (8, 8), (2, 3, 4, 5, 6)])
def test_npz_bad_image_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match="images"):
        read_npz(path)


def test_npz_pickled_objects_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.array([{"a": 1}] * 10, dtype=object))
    with pytest.raises(DataError, match=str(path)):
        read_npz(path)


@pytest.mark.parametrize("content", [None, b"definitely not a zip file"])
def test_npz_missing_or_garbage(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "d.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        read_npz(path)


# Hostile inputs: FIFOs, decompression bombs, array headers that lie.


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (6_000, 6_000)],  # past Pillow's own bomb limit; past ensgan's only
)
def test_a_decompression_bomb_is_refused_naming_the_file(
    tmp_path: Path, width: int, height: int
) -> None:
    write_image(tmp_path / "a" / "ok.png", 5)
    bomb = png_header_only(tmp_path / "a" / "bomb.png", width, height)
    with pytest.raises(DataError) as info:
        read_folder(tmp_path, 8, 1)
    assert str(bomb) in str(info.value) and "\n" not in str(info.value)
    assert "pixels" in str(info.value)


@pytest.mark.timeout(60)
def test_a_fifo_in_the_image_folder_is_refused_without_blocking(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.png", 5)
    os.mkfifo(tmp_path / "stream.png")
    with pytest.raises(DataError, match=r"stream.png is a FIFO \(named pipe\), not a regular"):
        read_folder(tmp_path, 8, 1)


def test_a_folder_named_like_an_image_is_refused_naming_it(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.png", 5)
    (tmp_path / "album.png").mkdir()
    with pytest.raises(DataError, match="album.png is a directory, not a regular file"):
        read_folder(tmp_path, 8, 1)


@pytest.mark.timeout(60)
def test_a_fifo_as_the_npz_path_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "d.npz")
    with pytest.raises(DataError, match="FIFO"):
        read_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("member", ["images", "labels"])
def test_an_npz_header_declaring_an_absurd_shape_is_refused_naming_the_file(
    tmp_path: Path, member: str
) -> None:
    path = tmp_path / "d.npz"
    arrays = {"images": np.zeros((10, 8, 8), np.uint8), "labels": np.zeros(10, np.int64)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            if name == member:
                zf.writestr(f"{name}.npy", lying_npy((10**12, 64, 64)))
            else:
                buf = io.BytesIO()
                np.save(buf, array)
                zf.writestr(f"{name}.npy", buf.getvalue())
    with pytest.raises(DataError, match=rf"{path}: `{member}`: the header declares uint8"):
        read_npz(path)


def test_an_npz_larger_than_memory_allows_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deflated member inflates to what it declares; past the memory budget it is refused
    unread (the budget lowered here stands in for a machine with little memory)."""
    import ensgan.io.arrays

    path = tmp_path / "d.npz"
    np.savez_compressed(path, images=np.zeros((100, 16, 16), np.uint8))
    monkeypatch.setattr(ensgan.io.arrays, "memory_budget", lambda: 10_000)
    with pytest.raises(DataError, match=rf"{path}: `images`: uint8 \(100, 16, 16\) needs"):
        read_npz(path)


def test_a_prepared_array_whose_header_lies_is_refused_naming_it(
    digits_dir: tuple[Path, dict], tmp_path: Path
) -> None:
    out = tmp_path / "prepared"
    shutil.copytree(digits_dir[0], out)
    (out / "images.npy").write_bytes(lying_npy((10**12, 1, 8, 8)))
    with pytest.raises(DataError, match=f"{out / 'images.npy'}: the header declares"):
        load_prepared(out)


# Atomic replacement of data/prepared.


def test_failing_source_leaves_prepared_intact(tmp_path: Path) -> None:
    out = tmp_path / "data" / "prepared"
    card = prepare(DataConfig(image_size=8), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((10, 8, 8), np.uint8))
    with pytest.raises(DataError):
        prepare(npz_cfg(bad), out)
    with pytest.raises(DataError):
        prepare(folder_cfg(tmp_path / "no-such-folder"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_prepared(out).card == card


def test_failure_while_writing_leaves_prepared_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data" / "prepared"
    card = prepare(DataConfig(image_size=8), out)
    real_save = np.save
    calls = []

    def failing_save(file, arr, *a, **kw):
        calls.append(file)
        if len(calls) == 2:  # images.npy written, split.npy fails (e.g. disk full)
            raise OSError("No space left on device")
        return real_save(file, arr, *a, **kw)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        prepare(DataConfig(image_size=8, seed=3), out)
    monkeypatch.undo()
    assert load_prepared(out).card == card  # the old, complete data
    assert all(os.fspath(out) not in os.fspath(f) for f in calls)  # staged elsewhere
    # The next successful prepare replaces it and cleans up the staging dir.
    new = prepare(DataConfig(image_size=8, seed=3), out)
    assert new.sha256 != card.sha256 and load_prepared(out).card == new
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_prepare_replaces_labels_file(tmp_path: Path) -> None:
    """Re-preparing from a source without labels must not keep the old labels.npy."""
    out = tmp_path / "prepared"
    prepare(DataConfig(image_size=8), out)
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((10, 8, 8), np.uint8))
    card = prepare(npz_cfg(path), out)
    assert not (out / "labels.npy").exists()
    assert card.labels is False and card.n_classes == 0
    assert load_prepared(out).labels is None


# The hold-out split on its own.


def test_split_holdout_without_labels() -> None:
    m = split_holdout(50, None, 0.2, 0)
    assert m.sum() == 10 and m.dtype == bool
    assert not np.array_equal(m, split_holdout(50, None, 0.2, 1))


def test_split_holdout_singleton_class_falls_back_to_random() -> None:
    labels = np.array([0] * 10 + [1])
    assert split_holdout(11, labels, 0.3, 0).sum() == math.ceil(11 * 0.3)


def test_split_holdout_many_classes_few_images() -> None:
    """Stratify only when both sides can hold every class, counted as scikit-learn counts
    (test = ceil(n * fraction)); 20 * 0.615 rounds to 12 but sklearn holds out 13."""
    labels = np.repeat(np.arange(8), [3, 3, 3, 3, 2, 2, 2, 2])
    m = split_holdout(20, labels, 0.615, 0)
    assert m.sum() == 13


def test_splits_validation_and_the_renamed_key() -> None:
    with pytest.raises(ValueError, match="leave at least 0.1 to train"):
        DataConfig(splits={"stack": 0.4, "calibrate": 0.3, "evaluate": 0.3})
    with pytest.raises(ValueError, match="holdout_fraction was replaced by splits"):
        DataConfig(holdout_fraction=0.2)
    with pytest.raises(ValueError):
        DataConfig(splits={"stack": 0.0, "calibrate": 0.1, "evaluate": 0.1})


def test_assign_splits_refuses_too_few_images() -> None:
    with pytest.raises(DataError, match="too few images"):
        assign_splits(3, None, {"stack": 0.3, "calibrate": 0.3, "evaluate": 0.3}, 0)


def test_splits_that_leave_too_little_to_train_are_refused() -> None:
    fractions = {"stack": 0.05, "calibrate": 0.05, "evaluate": 0.8}
    for n in (10, 20):
        with pytest.raises(DataError, match="data.splits"):
            assign_splits(n, None, fractions, 0)
