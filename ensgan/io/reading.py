"""Opening files the user names: regular files only, and no more bytes than the use needs.

A FIFO named as params.yaml, or one dropped into an image folder, blocks the first read
forever (an open() of it waits for a writer that never comes), and a file of gigabytes
where a page of YAML belongs fills the memory: both are refused, naming the path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def open_regular(
    path: Path, what: str, error: type[Exception], fix: str = "name a regular file"
) -> BinaryIO:
    """`path` opened for binary reading, or `error` naming it when it is no regular file.

    The open itself never blocks (O_NONBLOCK), so a FIFO is refused rather than waited on;
    a missing or unreadable path raises the OSError, for the caller to word."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise error(f"{what} {path} is {kind}, not a regular file: {fix}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, limit: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of the regular file `path`, or `error` when it holds more than `limit`."""
    with open_regular(path, what, error) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(
            f"{what} {path} is larger than {limit // 1024} KiB, far more than such a file "
            "holds: is it the right file?"
        )
    return data
