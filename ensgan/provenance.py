"""Which version of the code made an output: a hash of the source files that shape it.

A member's fingerprint hashes the code that determines its weights, and a batch id the code
that samples and writes its images, so an edit there makes new outputs, as the stages' code
deps in dvc.yaml make DVC rerun them. Files are found without importing them (no torch).
"""

from __future__ import annotations

import hashlib
from importlib.util import find_spec
from pathlib import Path


def module_file(module: str) -> Path:
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no source file for {module}")
    return Path(spec.origin)


def code_version(modules: tuple[str, ...]) -> str:
    """sha256 (16 hex) of the modules' source files, in the given order."""
    h = hashlib.sha256()
    for module in modules:
        h.update(module.encode() + b"\0")
        h.update(module_file(module).read_bytes())
    return h.hexdigest()[:16]
