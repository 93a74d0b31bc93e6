"""The nightly flow in a git+DVC repository: dvc.lock records what it made, `dvc status` is
clean, the cache goes to an S3 DVC remote (SeaweedFS), and a teammate's fresh clone pulls it
and has nothing to rerun."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, STAGES, TINY_FLOW, S3Server, write_tiny_project
from tests.helpers import sh as _sh

pytestmark = pytest.mark.e2e


def _files(root: Path, top: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def versioned(tmp_path_factory: pytest.TempPathFactory, prefect_server, seaweedfs: S3Server
              ) -> dict:  # fmt: skip
    """A git+DVC project with an S3 remote, after one run of the flow."""
    from ensgan.orchestration.flow import run

    repo = write_tiny_project(tmp_path_factory.mktemp("versioned") / "proj", **TINY_FLOW)
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    shutil.copytree(REPO / "ensgan", repo / "ensgan", ignore=shutil.ignore_patterns("__pycache__"))
    bucket = f"ensgan-dvc-{uuid.uuid4().hex[:12]}"
    seaweedfs.client().create_bucket(Bucket=bucket)
    _sh(repo, "git", "init", "-q")
    _sh(repo, "dvc", "init", "-q")
    _sh(repo, "dvc", "remote", "add", "-d", "nightly", f"s3://{bucket}/dvc")
    _sh(repo, "dvc", "remote", "modify", "nightly", "endpointurl", seaweedfs.endpoint_url)
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-qm", "project")
    summary = run(params_path="params.yaml", root=str(repo))
    return {"repo": repo, "summary": summary, "bucket": bucket, "s3": seaweedfs}


def test_dvc_status_is_clean_once_the_first_run_has_ended(versioned: dict) -> None:
    """After the first run (no earlier outputs, no earlier dvc.lock), a `dvc status` of its
    own finds every stage as dvc.lock recorded it: publish's receipt and history chart
    included, so nothing the flow wrote landed after it recorded the stage."""
    from ensgan.orchestration.versioning import status

    repo = versioned["repo"]
    assert status(repo) == {}  # `dvc status --json` in a process of its own
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for out in lock["stages"]["publish"]["outs"]:  # hashed here, not read from DVC's state
        digest = hashlib.md5((repo / out["path"]).read_bytes(), usedforsecurity=False).hexdigest()
        assert digest == out["md5"], out["path"]


def test_the_flow_records_every_stage_in_dvc_lock(versioned: dict) -> None:
    repo, summary = versioned["repo"], versioned["summary"]
    dvc = summary["dvc"]
    assert dvc["recorded"] and dvc["status"] == {} and dvc["pushed_to"] == "nightly"
    assert dvc["seconds"] > 0  # what recording and pushing cost (benchmarks/flow_overheads.py)
    from ensgan.orchestration.summary import BASELINE, night_summary

    assert night_summary(summary)[-1] == BASELINE  # `ensgan run` ends with how to commit it
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert "up to date" in _sh(repo, "dvc", "status")
    assert "Running stage" not in _sh(repo, "dvc", "repro")  # dvc.lock describes the flow's run


def test_the_batch_lineage_names_the_members_dvc_lock_holds(versioned: dict) -> None:
    repo, run_id = versioned["repo"], versioned["summary"]["batch"]["run_id"]
    meta = json.loads((repo / "outputs/batches" / run_id / "batch.json").read_text())
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    members = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/members")
    assert meta["lineage"]["dvc_inputs"]["models/members"] == members["md5"]
    assert set(meta["lineage"]["dvc_inputs"]) == {"data/prepared", "models/members",
                                                   "models/stacker"}  # fmt: skip


def test_git_sees_only_the_lock_and_the_small_text_results(versioned: dict) -> None:
    """What the flow leaves for git: dvc.lock and the `cache: false` outs, nothing DVC caches
    (no weights, no images) and no .gitignore edits."""
    repo = versioned["repo"]
    changed = _sh(repo, "git", "status", "--porcelain", "--untracked-files=all").splitlines()
    paths = {line[3:] for line in changed}
    assert "dvc.lock" in paths and "reports/metrics.json" in paths
    assert "outputs/generated.json" in paths and "outputs/published.json" in paths
    assert "reports/key/real.json" in paths  # DVC's metrics: `dvc metrics diff`'s baseline
    assert paths <= {"dvc.lock", "reports/metrics.json", "reports/plots/fd.csv",
                     "outputs/generated.json", "outputs/published.json"} | {
        p for p in paths if p.startswith(("reports/plots/losses/", "reports/key/"))}  # fmt: skip


def test_a_teammates_clone_pulls_and_has_nothing_to_rerun(versioned: dict, tmp_path: Path) -> None:
    repo = versioned["repo"]
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-qm", "nightly")
    mate = tmp_path / "mate"
    _sh(tmp_path, "git", "clone", "-q", str(repo), str(mate))
    assert not (mate / "models").exists()  # weights come from the DVC remote, not git
    _sh(mate, "dvc", "pull")
    assert "up to date" in _sh(mate, "dvc", "status")
    out = _sh(mate, "dvc", "repro")
    assert "Running stage" not in out, out
    for top in ("models", "data/prepared", "reports/grids"):
        assert _files(mate, top) == _files(repo, top), top
    keys = versioned["s3"].client().list_objects_v2(Bucket=versioned["bucket"], Prefix="dvc/")
    assert keys["KeyCount"] > 0  # the cache is in the bucket


def test_batches_show_commands_make_the_batch_again(versioned: dict, tmp_path: Path) -> None:
    """In a fresh clone, the commands `ensgan batches show` prints (run as printed, after the
    night's dvc.lock was committed) make the same batch, byte for byte."""
    repo, run_id = versioned["repo"], versioned["summary"]["batch"]["run_id"]
    if "nightly" not in _sh(repo, "git", "log", "--format=%s"):
        _sh(repo, "git", "add", "-A")
        _sh(repo, "git", "commit", "-qm", "nightly")
    _sh(repo, "git", "commit", "-q", "--allow-empty", "-m", "a later commit")
    clone = tmp_path / "again"
    _sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    shown = _sh(repo, "ensgan", "batches", "show", run_id, "--store", str(repo / "store"))
    cmds = shown.split("to make it again, in a clone of the project:\n")[1].splitlines()
    script = "set -e\n" + "\n".join(c.strip() for c in cmds if c.strip())
    _sh(clone, "bash", "-c", script)
    made, original = (_files(r, f"outputs/batches/{run_id}") for r in (clone, repo))
    made.pop(f"outputs/batches/{run_id}/batch.json")  # its lineage names the clone's checkout
    original.pop(f"outputs/batches/{run_id}/batch.json")
    assert made == original  # every shard and the manifest


def test_a_project_that_is_not_dvc_is_not_recorded(tmp_path: Path) -> None:
    from ensgan.orchestration.versioning import dvc_project

    assert "not a DVC project" in dvc_project(tmp_path)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    assert dvc_project(tmp_path) is None
    assert "dvc.yaml's stages read params.yaml" in dvc_project(tmp_path, "other.yaml")


def test_without_a_remote_nothing_is_pushed(tmp_path: Path) -> None:
    from ensgan.orchestration.versioning import default_remote, push

    _sh(tmp_path, "git", "init", "-q")
    _sh(tmp_path, "dvc", "init", "-q")
    assert default_remote(tmp_path) is None and push(tmp_path) is None
    _sh(tmp_path, "dvc", "remote", "add", "-d", "elsewhere", str(tmp_path / "remote"))
    assert default_remote(tmp_path) == "elsewhere"
