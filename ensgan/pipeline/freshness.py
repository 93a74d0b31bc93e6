"""Whether a stage's outputs are current, so that a rerun on unchanged inputs rewrites nothing.

A stage records the hash of everything it read (the params it reads, the files it reads, its
code's import closure) in what it writes; run again with the same hash, it returns what it
wrote before and touches no file. This is DVC's own rule (deps, params and code unchanged:
the stage is skipped), applied by the stage itself, so the Prefect flow and a plain `ensgan
stack` skip exactly what `dvc repro` would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ensgan.config import Params
from ensgan.layout import Layout
from ensgan.pipeline.common import stage_params
from ensgan.provenance import code_version

log = logging.getLogger("ensgan")

# The files each stage reads (dvc.yaml's data deps), by Layout attribute.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "stack": ("prepared", "members"),
    "evaluate": ("prepared", "members", "stacker"),
}


def tree_sha256(path: Path) -> str:
    """sha256 over every file below `path` (its relative name and its bytes); a missing path
    hashes as such."""
    path = Path(path)
    h = hashlib.sha256()
    if not path.exists():
        return "missing"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def inputs_sha256(stage: str, params: Params, layout: Layout, **extra: object) -> str:
    """The hash a stage records: its params, the files it reads, its code, and `extra`."""
    parts = {
        "params": stage_params(params, stage),
        "files": {name: tree_sha256(getattr(layout, name)) for name in STAGE_FILES.get(stage, ())},
        "code": code_version(f"ensgan.pipeline.{stage}"),
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def up_to_date(stage: str, recorded: str | None, current: str, where: Path) -> bool:
    """Whether the output recorded `current`; says so in the log when it did."""
    if recorded != current:
        return False
    log.info("%s: up to date (inputs unchanged since %s was made); nothing rewritten", stage, where)
    return True
