"""Dataset readers: images (uint8, resized to the params' size) and labels, without pickle.

Each `data.source` is a reader in ensgan.registry.SOURCES, `(data config, project root) ->
(images (N, C, S, S), labels or None)`. scikit-learn's `digits` ships with the package, so the
main job needs no download; a folder of PNG/JPEG images gets labels from sub-folder names when
every image sits in one; a .npz holds an `images` array (and optionally `labels`);
`fashion_mnist` and `mnist` read the files their packages put on the machine
(ensgan/data/mnist.py). `data.max_images` keeps a seeded subset, chosen before any image is
resized (or, for a folder, read).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ensgan.config import DataConfig
from ensgan.data.mnist import FASHION_MNIST_CLASSES
from ensgan.data.shaping import fit_image, kept, subset_of
from ensgan.errors import DataError
from ensgan.io.arrays import NPY_MAGIC, magic, npz_array
from ensgan.io.reading import open_regular
from ensgan.registry import SOURCES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASSES}  # the sources whose labels have names
EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}
CHANNELS = (1, 3, 4)  # gray, RGB, RGBA: the last axis of an (N, H, W, C) array
# Pixels one source image may have: a large photo fits; past it, decoding one image would
# take gigabytes, and every image is resized to at most 64x64 anyway.
MAX_PIXELS = 1 << 25


def read_digits() -> tuple[list[np.ndarray], np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return list(imgs), d.target.astype(np.int64)


def read_folder(
    path: Path, size: int, channels: int, max_images: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every PNG/JPEG under `path` (or `kept`'s subset of them) as uint8 (N, C, size, size),
    each resized as soon as it is read: a folder of large photos never holds more than one
    of them at full size."""
    files = folder_files(path, max_images, seed)
    images = np.empty((len(files), channels, size, size), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = fit_image(_read_image(f), size, channels)
    classes = folder_classes(path, files)
    labels = None
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[f.parent.relative_to(path).as_posix()] for f in files])
    return images, labels


def folder_files(path: Path, max_images: int | None, seed: int) -> list[Path]:
    """The image files of a folder source that are used (`kept`'s subset), in order."""
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no PNG/JPEG images under {path}")
    return [files[i] for i in kept(len(files), max_images, seed)]


def folder_classes(path: Path, files: list[Path]) -> list[str] | None:
    """The classes of a folder's images, their label order: the sub-folder names, when every
    image sits in one and there are two or more (None: unlabelled)."""
    classes = sorted({f.parent.relative_to(path).as_posix() for f in files})
    return classes if all(f.parent != path for f in files) and len(classes) > 1 else None


def class_names(cfg: DataConfig, root: Path, n_classes: int) -> list[str] | None:
    """What each label means, for the report: a folder's sub-folder names, Fashion-MNIST's
    garments; None where the label is its own name (digits) or there are no labels."""
    if n_classes < 2:
        return None
    if cfg.source == "folder":
        assert cfg.path is not None
        path = Path(root) / cfg.path
        names = folder_classes(path, folder_files(path, cfg.max_images, cfg.seed))
    else:
        names = list(CLASS_NAMES.get(cfg.source, ())) or None
    return names[:n_classes] if names and len(names) >= n_classes else None


def _read_image(f: Path) -> np.ndarray:
    """One image as uint8 gray or RGB; its header's size is checked before a pixel is decoded
    (a few bytes of PNG may declare billions of pixels), and a FIFO is refused, not waited on."""
    try:
        with (
            open_regular(f, "image", DataError, "move it out of the data folder") as fh,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DataError(_too_many_pixels(f, im.width, im.height))
                im.load()
                if im.mode not in EIGHT_BIT_MODES:  # 16-bit or float: no lossless uint8
                    raise DataError(
                        f"cannot read image {f}: mode {im.mode} (16-bit or float pixels) is not "
                        "supported; save it as 8-bit grayscale or RGB"
                    )
                return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except DataError:  # already names the file (a ValueError, so before the next clause)
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {f}: {exc}") from None
    except Image.DecompressionBombWarning as exc:  # raised: the filter above makes it an error
        raise DataError(f"cannot read image {f}: {exc}") from None


def _too_many_pixels(f: Path, width: int, height: int) -> str:
    return (
        f"image {f} is {width}x{height} pixels, more than {MAX_PIXELS:,}: too large to be a "
        "training image (a decompression bomb?); shrink it or move it out of the folder"
    )


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`images`: uint8 in [0, 255], or floats in [0, 1] or [-1, 1] (the two usual scalings);
    optional `labels`: one non-negative integer per image."""
    try:
        with open_regular(path, "npz file", DataError) as fh:
            if magic(fh) == NPY_MAGIC:
                raise DataError(f"{path} is a single array, not a .npz archive with `images`")
            with np.load(fh, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise DataError(f"{path} has no `images` array (found: {sorted(z.files)})")
                images = npz_array(z, "images", path)
                labels = npz_array(z, "labels", path) if "labels" in z.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    _check_image_shape(images, path)
    if images.dtype != np.uint8:
        images = _to_uint8(images, path)
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{path}: `labels` must be {len(images)} integers (one per image), "
                f"got {labels.dtype} {labels.shape}"
            )
        if labels.min() < 0:
            raise DataError(f"{path}: `labels` must be non-negative, found {labels.min()}")
        labels = labels.astype(np.int64)
    return images, labels


def _check_image_shape(images: np.ndarray, path: Path) -> None:
    """(N, H, W) or (N, H, W, C) with C gray, RGB or RGBA; a channels-first array is refused
    with the fix rather than read as a stack of C-channel images."""
    shape = images.shape
    if images.ndim not in (3, 4) or len(images) == 0 or 0 in shape:
        raise DataError(f"{path}: `images` must be (N, H, W) or (N, H, W, C), got {shape}")
    if images.ndim == 4 and shape[-1] not in CHANNELS:
        hint = (
            "; it looks channels-first (N, C, H, W): use images.transpose(0, 2, 3, 1)"
            if shape[1] in CHANNELS
            else ""
        )
        raise DataError(
            f"{path}: `images` last axis must be 1, 3 or 4 channels, got {shape[-1]} "
            f"(shape {shape}){hint}"
        )


def _to_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """Integers in [0, 255], or floats in [0, 1] or [-1, 1]: anything else is refused, not
    clipped or rescaled (a float array in [0, 255] is a scaling mistake more often than not)."""
    is_int = np.issubdtype(images.dtype, np.integer)
    if not (is_int or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{path}: `images` must be uint8, integers or floats, got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{path}: `images` contains NaN or infinite values")
    if is_int:
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: integer `images` must be in [0, 255], found [{lo:g}, {hi:g}]")
        return images.astype(np.uint8)
    if lo < -1 or hi > 1:
        raise DataError(
            f"{path}: float `images` must be in [0, 1] or [-1, 1], found [{lo:g}, {hi:g}] "
            "(uint8 for [0, 255])"
        )
    images = (images + 1) * 127.5 if lo < 0 else images * 255.0
    return np.clip(images, 0, 255).round().astype(np.uint8)


def load_source(cfg: DataConfig, root: Path = Path(".")) -> tuple[np.ndarray, np.ndarray | None]:
    """The configured source's images, uint8 (N, C, size, size), and labels (or None)."""
    return SOURCES.load(cfg.source)(cfg, Path(root))


def digits_source(cfg: DataConfig, root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    return subset_of(cfg, *read_digits())


def folder_source(cfg: DataConfig, root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    assert cfg.path is not None  # DataConfig requires it for a folder
    return read_folder(root / cfg.path, cfg.image_size, cfg.channels, cfg.max_images, cfg.seed)


def npz_source(cfg: DataConfig, root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    assert cfg.path is not None  # DataConfig requires it for a .npz
    return subset_of(cfg, *read_npz(root / cfg.path))
