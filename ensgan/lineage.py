"""Where a batch came from, recorded in its batch.json: the git commit of the project (and
whether the work tree had uncommitted changes), dvc.lock's digest as it stood when the batch
was generated (the stages before `generate`), and each member's weights hash. With them, a
batch in the bucket names what to check out and pull to make it again (`ensgan batches show`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        res = subprocess.run(
            [git, "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def lineage(root: Path, member_weights: dict[str, str | None]) -> dict:
    """The record; a field is None where the project is not a git repo or has no dvc.lock."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    lock = root / "dvc.lock"
    lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "dvc_lock_sha256": lock_sha,
        "member_weights_sha256": dict(sorted(member_weights.items())),
    }


def reproduce_commands(run_id: str, meta: dict) -> list[str]:
    """The commands that make the batch again, from its batch.json."""
    rec = meta.get("lineage") or {}
    steps = []
    if rec.get("git_commit"):
        steps.append(f"git checkout {rec['git_commit']}")
    steps += ["dvc pull", "ensgan generate", f"ls outputs/batches/{run_id}"]
    return steps
