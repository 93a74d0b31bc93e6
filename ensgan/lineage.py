"""Where a batch came from, recorded in its batch.json: the git commit of the project (and
whether the work tree had uncommitted changes), dvc.lock's digest as it stood when the batch
was generated, the DVC hashes of what generate read (the outs of prepare, train and stack as
dvc.lock records them: what `dvc pull` fetches from the remote), and each member's weights
hash. With them, a batch in the bucket names what to check out and pull to make it again
(`ensgan batches show`). The flow records those stages in dvc.lock before it generates
(ensgan/orchestration/versioning.py), so the hashes name the members that made the batch.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from ensgan.io.records import Lineage

INPUT_STAGES = ("prepare", "train", "stack")  # what generate reads


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


def dvc_inputs(lock: Path) -> dict[str, str] | None:
    """{out path: DVC hash} for the input stages' outs in dvc.lock; None without a lock."""
    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return None
    outs = {}
    for stage in INPUT_STAGES:
        for out in (stages.get(stage) or {}).get("outs") or []:
            if isinstance(out, dict) and "path" in out:
                outs[str(out["path"])] = str(out.get("md5") or out.get("etag") or "")
    return outs or None


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
        "dvc_inputs": dvc_inputs(lock) if lock_sha else None,
        "member_weights_sha256": dict(sorted(member_weights.items())),
    }


def reproduce_commands(run_id: str, rec: Lineage | None) -> list[str]:
    """The commands that make the batch again, from its batch.json's lineage.

    The recorded commit is the code the batch was made with; the dvc.lock that names its
    members is committed after the run (the flow writes it as the night ends), so where the
    lineage has the members' DVC hash, the checkout finds the first commit whose dvc.lock
    holds it (git's pickaxe), and `dvc pull` fetches just what generate reads. Every value
    from the store is one its record checked (a hex commit, a DVC hash, a run_id), and is
    quoted besides: a batch.json cannot add a command of its own."""
    rec = rec or Lineage()
    members = (rec.dvc_inputs or {}).get("models/members")
    steps = []
    if members:
        find = f"git log --all --reverse --format=%H -S {shlex.quote(members)} -- dvc.lock"
        steps.append(f'git checkout "$({find} | head -n 1)"')
        steps.append(f"dvc pull {' '.join(INPUT_STAGES)}")
    else:
        if rec.git_commit:
            steps.append(f"git checkout {shlex.quote(rec.git_commit)}")
        steps.append("dvc pull")
    steps += ["ensgan generate", f"ls {shlex.quote(f'outputs/batches/{run_id}')}"]
    return steps
