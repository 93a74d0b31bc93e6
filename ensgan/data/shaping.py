"""Shaping a source's images for the pipeline: which are kept (`data.max_images`), and each
resized to the params' size and channels. Shared by every reader (ensgan/data/sources.py,
ensgan/data/mnist.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ensgan.config import DataConfig


def kept(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """Which of a source's n images are used: all, or `max_images` of them drawn with `seed`
    (in their order: a source sorted by class still gives every class its share)."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return np.sort(rng.choice(n, max_images, replace=False))


def to_array(images: list[np.ndarray] | np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize every image to size x size with `channels` channels -> uint8 (N, C, H, W)."""
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = fit_image(img, size, channels)
    return out


def fit_image(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """One HxW or HxWxC image as uint8 (channels, size, size): converted, then resized."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr).convert("L" if channels == 1 else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    a = np.asarray(im)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def subset_of(
    cfg: DataConfig, raw: list[np.ndarray] | np.ndarray, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """`kept`'s images of a source read whole, resized, and their labels."""
    keep = kept(len(raw), cfg.max_images, cfg.seed)
    picked = [raw[i] for i in keep] if isinstance(raw, list) else raw[keep]
    return to_array(picked, cfg.image_size, cfg.channels), None if labels is None else labels[keep]


def given_path(cfg: DataConfig, root: Path) -> Path | None:
    """data.path under the project root, when set."""
    return None if cfg.path is None else root / cfg.path
