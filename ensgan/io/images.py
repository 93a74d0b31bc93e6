"""Images to files: PNG bytes for batches and tiled sample grids for reports and checkpoints."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ensgan.io.files import atomic_write

PAD_VALUE = 128  # mid-grey borders separate tiles on both black and white backgrounds


def png_bytes(image: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes; Pillow infers 'L' from 2-D and 'RGB' from (H, W, 3)."""
    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def grid_image(
    images: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 4
) -> Image.Image:
    """Tile uint8 (N, C, H, W) images, `nrow` per row, upscaled by nearest.

    The result is (rows*(H+pad)+pad)*scale pixels high and (nrow*(W+pad)+pad)*scale wide.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 numpy array shaped (N, C, H, W)")
    n, c, h, w = images.shape
    if n == 0 or c not in (1, 3):
        raise ValueError(f"need at least one image with 1 or 3 channels, got shape {images.shape}")
    if pad < 0 or scale < 1:
        raise ValueError(f"pad must be >= 0 and scale >= 1, got pad={pad}, scale={scale}")
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), PAD_VALUE, np.uint8)
    for i, img in enumerate(images):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid, "L" if c == 1 else "RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)


def save_grid(
    images: np.ndarray, path: str | Path, nrow: int | None = None, pad: int = 1, scale: int = 4
) -> Path:
    """`grid_image` as a PNG file, written atomically."""
    pil = grid_image(images, nrow, pad, scale)
    return atomic_write(Path(path), lambda tmp: pil.save(tmp, format="PNG"))


def png_image(data: bytes) -> np.ndarray:
    """PNG bytes -> (C, H, W) uint8, the inverse of `png_bytes` for L and RGB images."""
    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im.convert("L" if im.mode in ("L", "1", "P") else "RGB"))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
