"""A batch's tar shard checked as its readers will read it, never trusting what it claims.

A shard's sha256 in batch.json only says that the file is the one batch.json lists, and whoever
publishes a batch writes both. So the members are read one header at a time, as a sequential
reader (WebDataset, `tar -x`) meets them, and the shard must hold exactly the members its
manifest rows name, in their order, each once: a duplicate name would give a sequential reader
one copy while a lookup by name checks another; an unlisted member would reach consumers
unchecked; a sparse member declares a size its few stored bytes expand to. Every member is a
plain regular file with one USTAR header (no pax or GNU extension headers, which readers parse
differently), its size is checked against the manifest and the file before its data is read,
the data is hashed in bounded chunks, and nothing but zero padding may follow the end of the
archive.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ensgan.errors import BatchError

CHUNK = 1 << 20  # bytes read at a time from a member or the archive's tail
IMAGE_RE = re.compile(r"^\d{6,}\.png$")  # what `file` in a manifest row may be
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


def row_bytes(row: dict) -> bytes:
    """A manifest row as the one line (and sidecar) it is stored as."""
    compact = {"sort_keys": True, "separators": (",", ":"), "default": jsonable}
    return json.dumps(row, **compact).encode()


def jsonable(value: object) -> object:
    """numpy scalars/arrays (scores, seeds) as plain JSON numbers and lists."""
    import numpy as np

    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True)
class Member:
    """One member a shard must hold: its name, its size where known, and what it must be (a
    PNG's sha256 from its row, or a sidecar's exact bytes)."""

    name: str
    size: int | None
    sha256: str | None = None
    content: bytes | None = None


def expected_members(rows: list[dict], sidecars: bool, where: Path) -> list[Member]:
    """The members a shard's manifest rows name, in order: each PNG, then (format 2) its
    .json sidecar, which is the row itself, byte for byte."""
    out = []
    for row in rows:
        name, size = row.get("file"), row.get("bytes")
        if not isinstance(name, str) or not IMAGE_RE.match(name):
            raise BatchError(f"{where}: row {row.get('id')!r} names file {name!r}, not NNNNNN.png")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise BatchError(f"{where}: row {row.get('id')!r} has bytes {size!r}, not a size")
        out.append(Member(name, size, sha256=str(row.get("sha256"))))
        if sidecars:
            sidecar = row_bytes(row)
            out.append(Member(name[: -len(".png")] + ".json", len(sidecar), content=sidecar))
    return out


def check_shard(path: Path, expected: list[Member], manifest: str) -> None:
    """Refuse the shard at `path` unless it holds exactly `expected`, as the module says."""
    total = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            count = 0
            for member, want in _pairs(tar, expected, path, manifest):
                _check_header(member, want, total, path, manifest)
                _check_data(tar, member, want, path, manifest)
                count += 1
            if count < len(expected):
                raise BatchError(f"{path}: member {expected[count].name} missing from the shard")
            _check_tail(tar, path)
    except tarfile.TarError as exc:
        raise BatchError(f"{path}: unreadable tar ({exc})") from None


def _pairs(
    tar: tarfile.TarFile, expected: list[Member], path: Path, manifest: str
) -> Iterator[tuple[tarfile.TarInfo, Member]]:
    """Each member as the archive gives it, with the one the manifest lists in its place; reads
    one header at a time, so a shard of many headers is refused at the first one too many."""
    for i, member in enumerate(tar):
        _check_kind(member, path)
        if i >= len(expected):
            raise BatchError(f"{path}: member {member.name!r} is not listed in {manifest}")
        want = expected[i]
        if member.name != want.name:
            earlier = any(m.name == member.name for m in expected[:i])
            listed = any(m.name == member.name for m in expected)
            found = "a second copy of" if earlier else "listed elsewhere:" if listed else "unlisted"
            raise BatchError(
                f"{path}: member {want.name} missing from the shard ({found} {member.name!r} in "
                f"its place); a shard holds exactly its {manifest} rows' members, in order, once"
            )
        yield member, want


def _check_kind(member: tarfile.TarInfo, path: Path) -> None:
    """A plain regular file named like `000123.png`: no folder, link, device, sparse file,
    empty, absolute or dotted name, and no extension header before it."""
    name = member.name
    why = None
    if member.type not in _REGULAR:
        why = "sparse" if member.type == tarfile.GNUTYPE_SPARSE else f"type {member.type!r}"
    elif member.issparse():
        why = "sparse"
    elif member.offset_data != member.offset + tarfile.BLOCKSIZE:
        why = "pax or GNU extension header"
    elif not name or "/" in name or "\\" in name or name.startswith("."):
        why = "not a plain file name"
    if why:  # a consumer's extractall must not write outside its folder, nor expand it
        raise BatchError(f"{path}: unsafe tar member {name!r} ({why})")


def _check_header(
    member: tarfile.TarInfo, want: Member, total: int, path: Path, manifest: str
) -> None:
    if want.content is not None and member.size != want.size:
        raise BatchError(
            f"{path}: sidecar {member.name} missing or not its {manifest} row ({member.size} "
            f"bytes, the row is {want.size})"
        )
    if want.size is not None and member.size != want.size:
        raise BatchError(
            f"{path}: member {member.name} is {member.size} bytes, {manifest} says {want.size}"
        )
    if member.offset_data + member.size > total:
        raise BatchError(
            f"{path}: member {member.name} claims {member.size} bytes, past the end of the shard"
        )


def _check_data(
    tar: tarfile.TarFile, member: tarfile.TarInfo, want: Member, path: Path, manifest: str
) -> None:
    f = tar.extractfile(member)
    if f is None:  # not a regular file: _check_kind refused it already
        raise BatchError(f"{path}: member {member.name} is not a regular file")
    with f:
        if want.content is not None:  # a sidecar: its size is its row's, checked above
            if f.read(len(want.content) + 1) != want.content:
                raise BatchError(f"{path}: sidecar {member.name} missing or not its {manifest} row")
            return
        h = hashlib.sha256()
        while block := f.read(CHUNK):
            h.update(block)
    if h.hexdigest() != want.sha256:
        raise BatchError(f"{path}: member {member.name} does not match {manifest}")


def _check_tail(tar: tarfile.TarFile, path: Path) -> None:
    """After the end-of-archive block, zero padding only: a reader that skips zero blocks
    (`tar --ignore-zeros`) or a damaged header would otherwise find members not checked here."""
    with open(path, "rb") as f:
        f.seek(tar.offset)
        while block := f.read(CHUNK):
            if block.count(0) != len(block):
                raise BatchError(
                    f"{path}: data after the archive's last member (hidden members or a "
                    "damaged header)"
                )
