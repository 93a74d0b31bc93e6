"""Every stage is atomic as a whole under kill -9, tested the way it failed.

A stage runs in a child process (tests/kill_at_write.py) that, at each of its writes under the
project (a file opened for writing, a rename, a removal, a directory made), copies the project
as it is before that write: what kill -9 at that instant leaves on disk. After each such state
the next start recovers (`recover_outputs`), and the outputs must be those of one run: all old
or all new, never a mix, nothing half-written, nothing stranded, and readable by the next
stage. A few of the states are checked against a real SIGKILL at the same write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, run_stages, write_tiny_project

pytestmark = pytest.mark.e2e  # a child process per kill: slower than the inner loop

TINY_SERIAL = {"train": {"steps": 30, "batch_size": 32, "checkpoint_every": 10,
                         "log_every": 5, "device": "cpu", "workers": 1}}  # fmt: skip
# Byte-unstable formats (zip timestamps, safetensors' metadata order), and the stacker's card,
# which records its skops file's sha256: compared as "rewritten".
UNSTABLE = re.compile(r"\.(skops|safetensors)$|^models/stacker/card\.json$")
STAGING = re.compile(r"(^|/)\.[^/]*(\.partial|\.tmp|\.old)(/|$)")


def _run(root: Path, mode: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tests.kill_at_write", mode, str(root), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _states(root: Path, out: Path, *args: str) -> list[tuple[int, str, Path]]:
    """Run the command once in `root`, keeping the project as it is before each write."""
    res = _run(root, f"snapshot:{out}", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split(" ", 3) for line in res.stderr.splitlines() if line.startswith("WRITE ")]
    return [(int(k), f"{event} {path}", out / k) for _, k, event, path in rows]


def _snapshot(root: Path, tops: tuple[str, ...]) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for top in tops
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and top != ".ensgan.lock"
    }


def _one_run(now: dict, old: dict, new: dict, what: str) -> str:
    """'old' or 'new': which single run the outputs `now` are; fails on a mix.

    Byte-stable files must equal one run's; a byte-unstable one (rewritten with the same
    content gives other bytes) must be the old bytes in an old state and other bytes in a new.
    """
    files = sorted(set(old) | set(new))
    stable = [f for f in files if not UNSTABLE.search(f) and old.get(f) != new.get(f)]
    unstable = [f for f in files if UNSTABLE.search(f)]
    for label, ref in (("old", old), ("new", new)):
        if all(now.get(f) == ref.get(f) for f in stable):
            for f in unstable:
                same = now.get(f) == old.get(f)
                assert f in now and same == (label == "old"), f"{what}: {f} is not {label}"
            return label
    mixed = {f: ("old" if now.get(f) == old.get(f) else "new" if now.get(f) == new.get(f) else "?")
             for f in stable}  # fmt: skip
    raise AssertionError(f"{what}: outputs of two runs mixed: {mixed}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny project (every stage run once), in this process: only the runs that are
    killed or snapshotted need a child process (each child pays the imports again)."""
    root = write_tiny_project(tmp_path_factory.mktemp("crash") / "p", **TINY_SERIAL)
    with contextlib.chdir(root):  # relative paths in what it writes, as `ensgan STAGE` has
        run_stages(Path("."))
    return root


def _with_params(src: Path, dst: Path, section: str, **values: object) -> Path:
    shutil.copytree(src, dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params[section] = {**params[section], **values}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


def _recover(root: Path) -> None:
    """What the next start does before any stage: finish or discard an interrupted step."""
    from ensgan.io.files import recover_outputs

    recover_outputs(root)


def _no_stranded(root: Path, tops: tuple[str, ...]) -> None:
    for top in (".", *tops):
        base = root / top
        if not base.exists():
            continue
        names = [base / n for n in os.listdir(base)] if top == "." else list(base.rglob("*"))
        stranded = [p for p in names if STAGING.search(p.relative_to(root).as_posix())]
        stranded += [p for p in names if p.name.startswith(".ensgan-") and p.name != ".ensgan.lock"]
        assert not stranded, f"left behind after recovery: {stranded}"


# stage -> (params section and change that makes its outputs new, the outputs it owns)
CASES = {
    "prepare": (("data", {"seed": 1}), ("data",)),
    "stack": (("stack", {"seed": 1}), ("models/stacker",)),
    "evaluate": (("evaluate", {"seed": 1}), ("reports",)),
}


def _read_stacker(root: Path) -> None:
    from ensgan.io.cards import StackerCard, read_card

    read_card(StackerCard, root / "models" / "stacker")


def _read_prepared(root: Path) -> None:
    from ensgan.data.prepared import load_prepared

    load_prepared(root / "data" / "prepared")


def _read_metrics(root: Path) -> None:
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert (root / "reports" / "index.html").read_text().rstrip().endswith("</html>")
    for name in metrics["members"]:  # every grid the metrics name is there
        assert (root / "reports" / "grids" / f"{name}.png").is_file()


READERS = {"prepare": _read_prepared, "stack": _read_stacker, "evaluate": _read_metrics}


@pytest.mark.parametrize("stage", list(CASES))
def test_a_kill_at_any_write_leaves_one_run(stage: str, project: Path, tmp_path: Path) -> None:
    (section, change), tops = CASES[stage]
    old = _snapshot(project, tops)
    clean = _with_params(project, tmp_path / "clean", section, **change)
    states = _states(clean, tmp_path / "states", stage)
    new = _snapshot(clean, tops)
    assert new != old, "the change must give the stage new outputs"
    assert len(states) >= 10
    seen = {}
    for k, write, state in states:
        _recover(state)
        _no_stranded(state, tops)
        READERS[stage](state)  # what the next stage reads, it can read
        seen[k] = _one_run(_snapshot(state, tops), old, new, f"{stage} killed at {write}")
    assert set(seen.values()) == {"old", "new"}, f"{stage}: kills gave only {set(seen.values())}"
    # The copies stand for real kills: SIGKILL at a few writes leaves the same after recovery.
    for k in _spread(states):
        root = _with_params(project, tmp_path / f"kill-{k}", section, **change)
        assert _run(root, f"kill:{k}", stage).returncode == -9
        _recover(root)
        assert _stable(_snapshot(root, tops)) == _stable(_snapshot(states[k - 1][2], tops))


def _spread(states: list) -> list[int]:
    """Three real kills: the first write, the last, and one between."""
    return sorted({1, len(states) // 2, len(states)})


def _stable(snap: dict[str, str]) -> dict[str, str]:
    return {f: h for f, h in snap.items() if not UNSTABLE.search(f)}


def test_a_kill_during_generate_never_points_at_a_partial_batch(
    project: Path, tmp_path: Path
) -> None:
    """generate: the batch is written whole (atomic_dir), then outputs/generated.json is
    switched to it: a kill leaves the old pointer (and perhaps a complete unused batch) or the
    new one, and the next run finishes the job."""
    from ensgan.io.batches import verify_batch

    old_run = _pointer(project)["run_id"]
    clean = _with_params(project, tmp_path / "clean", "generate", seed=1)
    states = _states(clean, tmp_path / "states", "generate")
    new_run = _pointer(clean)["run_id"]
    assert new_run != old_run and len(states) >= 5
    for _, write, state in states:
        _recover(state)
        _no_stranded(state, ("outputs",))
        assert _pointer(state)["run_id"] in (old_run, new_run), write
        verify_batch(state / "outputs" / "batches" / _pointer(state)["run_id"])
        for d in (state / "outputs" / "batches").iterdir():  # what looks like a batch is one
            verify_batch(d)
    last = states[-1][2]  # killed at its last write: the next generate finishes
    again = _run(last, "run", "generate")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _pointer(last)["run_id"] == new_run


def _pointer(root: Path) -> dict:
    return json.loads((root / "outputs" / "generated.json").read_text())


def test_a_kill_during_publish_lists_only_complete_batches(project: Path, tmp_path: Path) -> None:
    """publish: the manifest goes up last, so a kill leaves the new batch invisible or whole,
    and outputs/published.json old or naming a batch the store lists; the next run finishes."""
    from ensgan.io.batches import list_batches, pull_batch
    from ensgan.io.storage import LocalStore

    clean = _with_params(project, tmp_path / "clean", "generate", seed=1)
    assert _run(clean, "run", "generate").returncode == 0
    base = tmp_path / "base"
    shutil.copytree(clean, base)
    states = _states(clean, tmp_path / "states", "publish")
    new_run = _pointer(clean)["run_id"]
    assert len(states) >= 5
    for _, write, state in states:
        _recover(state)
        store = LocalStore(state / "store")
        listed = {b.run_id for b in list_batches(store)}
        for run_id in listed:  # every batch a consumer sees pulls and verifies
            pull_batch(store, run_id, tmp_path / "pulled" / write.replace("/", "_"))
        published = json.loads((state / "outputs" / "published.json").read_text())
        assert published["run_id"] in listed, write
    last = states[-1][2]
    assert _run(last, "run", "publish").returncode == 0
    assert new_run in {b.run_id for b in list_batches(LocalStore(last / "store"))}


def test_a_kill_during_train_resumes_to_the_same_member(project: Path, tmp_path: Path) -> None:
    """train (raising train.steps continues the members): after a kill at any write, every
    member on disk loads and checks against its card, and the next run ends with the weights
    an uninterrupted run gives (spot-checked at three writes)."""
    from ensgan.gan.loaded import load_member

    clean = _with_params(project, tmp_path / "clean", "train", steps=40)
    states = _states(clean, tmp_path / "states", "train")
    assert len(states) >= 10
    want = _weights(clean)
    for _, _write, state in states:
        _recover(state)
        _no_stranded(state, ("models",))
        for member in (state / "models" / "members").iterdir():
            if (member / "card.json").exists():
                load_member(member)  # weights match the card's hash, or CardError
    for k in _spread(states):
        state = states[k - 1][2]
        res = _run(state, "run", "train")
        assert res.returncode == 0, res.stderr[-2000:]
        assert _weights(state) == want, f"resumed after a kill at {states[k - 1][1]}"


def _weights(root: Path) -> dict[str, str]:
    """Each member's EMA generator tensors, hashed (safetensors files are not byte-stable)."""
    from safetensors.numpy import load_file

    out = {}
    for member in sorted((root / "models" / "members").iterdir()):
        tensors = load_file(member / "checkpoint" / "generator_ema.safetensors")
        h = hashlib.sha256()
        for name in sorted(tensors):
            h.update(name.encode() + tensors[name].tobytes())
        out[member.name] = h.hexdigest()
    return out


def test_recovery_cleans_only_what_ensgan_writes(tmp_path: Path) -> None:
    """The sweep puts a torn swap back and removes ensgan's work folders and temp files, but
    never looks inside the user's data folders or the store."""
    from ensgan.io.files import recover_outputs

    (tmp_path / "data" / "mine" / ".keep.partial").mkdir(parents=True)  # the user's own
    (tmp_path / "store" / ".x.partial").mkdir(parents=True)
    (tmp_path / "data" / ".prepared.partial").mkdir()  # a prepare killed mid-write
    (tmp_path / "models" / "stacker").mkdir(parents=True)
    torn = tmp_path / "models" / "members" / "a" / ".checkpoint.old"  # killed between renames
    torn.mkdir(parents=True)
    (torn / "w").write_text("old weights")
    tmp = tmp_path / "reports" / f".metrics.json.{'a' * 32}.tmp"
    tmp.parent.mkdir()
    tmp.write_text("{half")
    lines = recover_outputs(tmp_path)
    assert (tmp_path / "models" / "members" / "a" / "checkpoint" / "w").read_text() == "old weights"
    assert not (tmp_path / "data" / ".prepared.partial").exists() and not tmp.exists()
    assert (tmp_path / "data" / "mine" / ".keep.partial").is_dir()
    assert (tmp_path / "store" / ".x.partial").is_dir()
    assert len(lines) == 3 and any("put" in line and "checkpoint" in line for line in lines)
