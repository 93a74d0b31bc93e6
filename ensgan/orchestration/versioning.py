"""The flow's results recorded the DVC way: `dvc commit` for what the flow made, `dvc push`.

DVC runs one stage at a time per repository, and the flow trains members in parallel outside
it, so after the stages ran the flow records them as DVC's docs describe for work done outside
`dvc repro`: `dvc commit` writes dvc.lock from the outputs, deps and params as they are. Then
`dvc status` is clean, `dvc repro` reruns nothing, and `dvc push` sends the cache to the
configured remote (a teammate's `dvc pull` gets the members instead of retraining them).

DVC is driven through its command line, in the flow's interpreter (`python -m dvc`): the CLI
is DVC's stable interface, and a subprocess keeps its logging and repository lock apart from
the flow's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ensgan.errors import ConfigError
from ensgan.lineage import INPUT_STAGES  # the flow records these before it generates

__all__ = [
    "INPUT_STAGES", "check_dvc_params", "commit", "default_remote", "dvc_project",
    "missing_params", "push", "status",
]  # fmt: skip


class VersioningError(RuntimeError):
    """A DVC command the flow ran failed (its output is in the message). Not a user error:
    a remote that did not answer may answer on the task's retry."""


def dvc_project(root: Path, params_path: str = "params.yaml") -> str | None:
    """Why the flow does not record its run in DVC, or None when it does.

    It records only what dvc.yaml would have run: a DVC repository whose stages read the same
    params.yaml as the flow."""
    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return f"{root.resolve()} is not a DVC project (no .dvc/ and dvc.yaml)"
    if (root / params_path).resolve() != (root / "params.yaml").resolve():
        return f"the flow ran with {params_path}, and dvc.yaml's stages read params.yaml"
    return None


def missing_params(root: Path, params_file: Path) -> list[str]:
    """The keys dvc.yaml's stages read from params.yaml that `params_file` does not write out.

    DVC reads the file itself, so a key left to ensgan's default is missing to it, and its
    `dvc commit` (after training) or `dvc repro` would fail on it: checked before any work."""
    import yaml

    try:
        stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text()).get("stages") or {}
        raw = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []  # an unreadable dvc.yaml is DVC's to report; bad params are load_params's
    wanted = [k for st in stages.values() for k in st.get("params", []) if isinstance(k, str)]
    missing = []
    for key in dict.fromkeys(wanted):
        node: object = raw
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            missing.append(key)
    return missing


def check_dvc_params(root: Path, params_path: str) -> None:
    """Refuse, before anything runs, a params.yaml that `dvc commit` would refuse after it."""
    missing = [] if dvc_project(root, params_path) else missing_params(root, root / params_path)
    if missing:
        raise ConfigError(
            f"{params_path} leaves out {', '.join(missing)}, which dvc.yaml's stages read: DVC "
            "reads the file itself, so write them out (params.yaml in the repository shows "
            "every key and its default)"
        )


def _dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if check and res.returncode != 0:
        out = (res.stdout + res.stderr).strip()[-2000:]
        cmd = " ".join(args)
        raise VersioningError(f"`dvc {cmd}` failed in {root} (exit {res.returncode}): {out}")
    return res


def commit(root: Path, stages: tuple[str, ...] | list[str]) -> None:
    """Record `stages` in dvc.lock as they are on disk (their outs go into the DVC cache)."""
    _dvc(Path(root), "commit", "--force", *stages)


def status(root: Path) -> dict:
    """`dvc status` as a dict: empty when dvc.lock describes the project exactly."""
    res = _dvc(Path(root), "status", "--json")
    return json.loads(res.stdout or "{}")


def default_remote(root: Path) -> str | None:
    """The name of the default DVC remote, or None when none is configured."""
    res = _dvc(Path(root), "remote", "default", check=False)
    name = res.stdout.strip()
    return name if res.returncode == 0 and name else None


def push(root: Path) -> str | None:
    """Push the cache of everything dvc.lock records to the default remote; the remote's name,
    or None (nothing pushed) when the project has none."""
    remote = default_remote(Path(root))
    if remote is not None:
        _dvc(Path(root), "push", "--remote", remote)
    return remote
