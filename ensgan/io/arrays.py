""".npy and .npz arrays read without trusting the shape their headers declare.

numpy allocates the declared shape before it reads a byte, so a header of a few hundred
bytes declaring (10**12, 64, 64) ends in a MemoryError that names no file. Here the declared
size is checked against the bytes the file holds and against the machine's memory first, and
every refusal names the file. Never with pickles (allow_pickle=False throughout).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import IO

import numpy as np

from ensgan.errors import DataError, short
from ensgan.io.reading import open_regular

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def memory_budget() -> int:
    """The most bytes one array may declare: half the machine's memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):  # not on this platform
        return 8 * 1024**3


def _declared(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes) from the .npy header at fp's position; fp is left past it."""
    version = np.lib.format.read_magic(fp)
    fmt = np.lib.format
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(fp)
    return shape, dtype, math.prod(shape) * dtype.itemsize


def _check(where: str, shape: tuple[int, ...], dtype: np.dtype, declared: int, held: int) -> None:
    what = f"{dtype} {short(shape, 60)}"
    if declared > held:
        raise DataError(
            f"{where}: the header declares {what} ({declared:,} bytes) but only {held:,} bytes "
            "follow: the file is truncated or not what it says"
        )
    if declared > memory_budget():
        raise DataError(
            f"{where}: {what} needs {declared / 1024**3:.1f} GiB, more than half this "
            "machine's memory: use a smaller dataset"
        )


def load_npy(path: Path) -> np.ndarray:
    """One .npy array, its declared size checked before numpy allocates it."""
    with open_regular(path, "array file", DataError) as f:
        try:
            shape, dtype, declared = _declared(f)
            _check(str(path), shape, dtype, declared, os.fstat(f.fileno()).st_size - f.tell())
            f.seek(0)
            return np.load(f, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None


def magic(f: IO[bytes]) -> bytes:
    """The first bytes of f (a .npz is a zip, a .npy starts with NPY_MAGIC); f is rewound."""
    head = f.read(len(NPY_MAGIC))
    f.seek(0)
    return head


def npz_array(z: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """Array `name` of an open .npz, its declared size checked before numpy allocates it."""
    member = f"{name}.npy" if f"{name}.npy" in z.zip.namelist() else name
    info = z.zip.getinfo(member)
    with z.zip.open(info) as fp:  # file_size: the uncompressed size, the most it can inflate to
        try:
            shape, dtype, declared = _declared(fp)
        except (ValueError, EOFError) as exc:
            raise DataError(f"cannot read `{name}` in {path}: {exc}") from None
        held = info.file_size - fp.tell()
    _check(f"{path}: `{name}`", shape, dtype, declared, held)
    return z[name]
