"""The `ensgan` command: batches published to a local store, SeaweedFS and moto, listed and
pulled back with verified checksums; user errors give one line and exit status 2."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from tests.helpers import tiny_params, write_tiny_project

runner = CliRunner()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _files(d: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(d.iterdir())}


E2E = pytest.mark.e2e  # starts a real S3 server


@pytest.mark.parametrize(
    "backend", ["local", pytest.param("seaweedfs", marks=E2E), pytest.param("moto_s3", marks=E2E)]
)
def test_publish_ls_pull_roundtrip(
    backend: str,
    request: pytest.FixtureRequest,
    staged_project: dict,
    s3_bucket: Callable,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = shutil.copytree(staged_project["root"], tmp_path / "project")  # publish writes there
    run_id = staged_project["generate"]["run_id"]
    monkeypatch.chdir(root)
    if backend == "local":
        store_args = ["--store", str(tmp_path / "store")]
        storage = {"url": str(tmp_path / "store")}
    else:
        server = request.getfixturevalue(backend)
        bucket = s3_bucket(server)
        url = f"s3://{bucket}/nightly"
        store_args = ["--store", url, "--endpoint-url", server.endpoint_url]
        storage = {"url": url, "endpoint_url": server.endpoint_url}
    (root / f"params-{backend}.yaml").write_text(tiny_params(storage=storage))

    res = runner.invoke(app, ["publish", "--params", f"params-{backend}.yaml"])
    assert res.exit_code == 0, res.output
    assert f"published: batch {run_id}" in res.output

    res = runner.invoke(app, ["batches", "ls", *store_args])
    assert res.exit_code == 0, res.output
    assert run_id in res.output and "40 images" in res.output

    res = runner.invoke(app, ["batches", "pull", run_id, str(tmp_path / "dl"), *store_args])
    assert res.exit_code == 0, res.output
    local = root / "outputs" / "batches" / run_id
    assert _files(tmp_path / "dl" / run_id) == _files(local)

    # Publishing the same batch again changes nothing.
    res = runner.invoke(app, ["publish", "--params", f"params-{backend}.yaml"])
    assert res.exit_code == 0 and f"already published: batch {run_id}" in res.output


def test_pull_unknown_batch_is_a_clear_error(staged_project: dict, tmp_path: Path) -> None:
    store = str(staged_project["root"] / "store")
    res = runner.invoke(app, ["batches", "pull", "no-such-run", str(tmp_path), "--store", store])
    assert res.exit_code == 2
    assert "no-such-run" in res.output


def test_bad_params_exit_2_naming_the_key(tmp_path: Path, monkeypatch) -> None:
    root = write_tiny_project(tmp_path, train={"steps": -3})
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["prepare"])
    assert res.exit_code == 2
    assert "train.steps" in res.output
    assert not (root / "data").exists()


def test_unknown_member_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(write_tiny_project(tmp_path))
    res = runner.invoke(app, ["train", "zeta"])
    assert res.exit_code == 2 and "zeta" in res.output


def test_validate_prints_resolved_params(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(write_tiny_project(tmp_path))
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 0 and '"steps": 30' in res.output


def test_invalid_params_are_one_error_per_line(tmp_path: Path, monkeypatch) -> None:
    """Validation's message is ours, one line per bad key: its line breaks are printed as line
    breaks (the text a store supplies is escaped, newlines too: test_batches_ls_...)."""
    monkeypatch.chdir(write_tiny_project(tmp_path, train={"steps": -1, "batch_size": 0}))
    res = runner.invoke(app, ["validate"])
    lines = res.output.splitlines()
    assert res.exit_code == 2 and lines[0] == "error: invalid params:"
    assert {line.split(":")[0].strip() for line in lines[1:]} == {"train.steps", "train.batch_size"}
    assert "\\x0a" not in res.output


def test_a_second_writer_in_the_same_project_is_refused(tmp_path: Path, monkeypatch) -> None:
    from ensgan.io.files import project_lock

    root = write_tiny_project(tmp_path)
    monkeypatch.chdir(root)
    with project_lock(root):
        res = runner.invoke(app, ["prepare"])
    assert res.exit_code == 2 and "another ensgan run" in res.output
    assert not (root / "data").exists()
    assert runner.invoke(app, ["prepare"]).exit_code == 0  # released: the next run proceeds


def test_batches_ls_lists_an_unreadable_batch_with_its_key(tmp_path: Path) -> None:
    import datetime as dt

    from ensgan.io.batches import BATCH_JSON, publish_batch
    from ensgan.io.storage import LocalStore
    from tests.helpers import make_batch

    store = LocalStore(tmp_path / "store")
    day = dt.date(2026, 3, 14)
    publish_batch(store, make_batch(tmp_path / "out", "run-1")[0], day)
    prefix = publish_batch(store, make_batch(tmp_path / "out", "run-2", seed=1)[0], day)["prefix"]
    (tmp_path / "store" / prefix / BATCH_JSON).write_text("{not json")
    res = runner.invoke(app, ["batches", "ls", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert "run-1  7 images" in res.output
    assert f"run-2  unreadable {tmp_path / 'store'}/{prefix}{BATCH_JSON}" in res.output


def test_batches_show_prints_lineage_and_the_commands(staged_project: dict) -> None:
    """batch.json records where the batch came from; `batches show` prints it."""
    import json

    root, run_id = staged_project["root"], staged_project["generate"]["run_id"]
    res = runner.invoke(app, ["batches", "show", run_id, "--store", str(root / "store")])
    assert res.exit_code == 0, res.output
    cards = {n: json.loads((root / "models/members" / n / "card.json").read_text()) for n in "ab"}
    for name, card in cards.items():
        assert f"member      {name}  weights {card['weights_sha256']}" in res.output
    assert f"data        {staged_project['prepare']['sha256']}" in res.output
    assert "git commit  not recorded" in res.output  # the tiny project is not a git repo
    assert res.output.rstrip().endswith(f"ls outputs/batches/{run_id}")
    assert "  dvc pull\n  ensgan generate" in res.output


def test_lineage_names_the_commit_its_state_and_dvc_lock(tmp_path: Path) -> None:
    import hashlib
    import os
    import subprocess

    from ensgan.io.records import Lineage
    from ensgan.lineage import lineage, reproduce_commands

    assert lineage(tmp_path, {"a": "w"})["git_commit"] is None  # not a repo: nothing invented
    who = {"NAME": "t", "EMAIL": "t@x.invalid"}
    env = {
        **os.environ,
        **{f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER") for k, v in who.items()},
    }
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(tmp_path), *cmd], check=True, env=env)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    rec = lineage(tmp_path, {"b": "2", "a": "1"})
    assert rec["git_commit"] == head and rec["git_dirty"] is False
    assert rec["dvc_lock_sha256"] == hashlib.sha256(b"schema: '2.0'\n").hexdigest()
    assert list(rec["member_weights_sha256"]) == ["a", "b"]
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert lineage(tmp_path, {})["git_dirty"] is True
    assert reproduce_commands("r", Lineage.model_validate(rec))[0] == f"git checkout {head}"
    assert rec["dvc_inputs"] is None  # a lock that records no stage names no input


P, M, S = ("0123456789abcdef" * 2 + suffix for suffix in (".dir", ".dir", ""))


def test_lineage_names_the_dvc_hashes_of_what_generate_read(tmp_path: Path) -> None:
    import yaml

    from ensgan.io.records import Lineage
    from ensgan.lineage import lineage, reproduce_commands

    def out(path: str, md5: str) -> dict:
        return {"path": path, "hash": "md5", "md5": md5, "size": 1, "nfiles": 1}

    stages = {
        "prepare": {"cmd": "ensgan prepare", "outs": [out("data/prepared", P)]},
        "train": {"cmd": "ensgan train", "outs": [out("models/members", M)]},
        "stack": {"cmd": "ensgan stack", "outs": [out("models/stacker", S)]},
        "evaluate": {"cmd": "ensgan evaluate", "outs": [out("reports/grids", "g" * 32)]},
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    rec = lineage(tmp_path, {})
    assert rec["dvc_inputs"] == {"data/prepared": P, "models/members": M, "models/stacker": S}
    cmds = reproduce_commands("r", Lineage.model_validate(rec))
    assert cmds[0].startswith("git checkout") and f"-S {M} -- dvc.lock" in cmds[0]
    assert cmds[1] == "dvc pull prepare train stack"  # what generate reads, nothing more
    (tmp_path / "dvc.lock").write_text("{not yaml")
    assert lineage(tmp_path, {})["dvc_inputs"] is None  # unreadable: nothing invented


def _command_paths() -> list[list[str]]:
    """Every group and command of `ensgan`, as the words that name it (the root is [])."""
    import typer.main

    def walk(cmd, path: list[str]) -> list[list[str]]:  # typer ships its own click
        found = [path]
        if hasattr(cmd, "commands"):
            for name, sub in sorted(cmd.commands.items()):
                found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


def test_the_command_tree_has_every_group() -> None:
    paths = {" ".join(p) for p in _command_paths()}
    assert {"", "batches", "batches ls", "batches pull", "bench modes", "run"} <= paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "ensgan")
def test_every_help_works(path: list[str]) -> None:
    """A user's first contact: each --help exits 0 and prints its usage (a help text that
    Rich reads as broken markup ends in a traceback instead)."""
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "Usage:" in res.output
    assert " ".join(["ensgan", *path]).split()[-1] in res.output


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b[32m"  # clear the screen, set the title, go green


def test_batches_ls_and_show_print_store_text_escaped(tmp_path: Path) -> None:
    """Whoever writes the bucket writes what `ls` and `show` print: escape sequences and
    newlines arrive escaped, never acted on, and never as a line of their own."""
    import json

    from ensgan.config import GateConfig
    from ensgan.io.batches import BATCH_JSON, publish_batch
    from ensgan.io.promotion import gate
    from ensgan.io.storage import LocalStore
    from tests.helpers import make_batch

    store = LocalStore(tmp_path / "store")
    for i, run_id in enumerate(["night-1", "night-2"]):
        prefix = publish_batch(store, make_batch(tmp_path / "out", run_id, seed=i)[0])["prefix"]
        gate(store, run_id, prefix, {"fd": 1.0 + i}, {}, GateConfig())
    path = tmp_path / "store" / "gate" / "night-2.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "reasons": [f"fd{ESCAPES} worse\nfake line"]}))
    path = tmp_path / "store" / prefix / BATCH_JSON
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "method": ESCAPES, "created": "today\nkey  forged"}))

    where = ["--store", str(tmp_path / "store")]
    for args in (["ls"], ["show", "night-2"]):
        res = runner.invoke(app, ["batches", *args, *where])
        assert res.exit_code == 0, res.output
        assert "\x1b" not in res.output and "\x07" not in res.output
        assert "\\x1b[2J\\x1b]0;owned\\x07\\x1b[32m" in res.output
    assert "worse\\x0afake line" in runner.invoke(app, ["batches", "ls", *where]).output
    shown = runner.invoke(app, ["batches", "show", "night-2", *where]).output
    assert "today\\x0akey  forged" in shown and "\nkey  forged" not in shown

    # an error that quotes the store (a hostile key in a batch.json) is escaped too
    weights = {f"g{ESCAPES}": 5}
    path.write_text(json.dumps({**meta, "lineage": {"member_weights_sha256": weights}}))
    res = runner.invoke(app, ["batches", "show", "night-2", *where])
    assert res.exit_code == 2 and "\x1b" not in res.output
    assert "member_weights_sha256.g\\x1b[2J" in res.output


@E2E
def test_third_party_info_logs_stay_out_of_the_terminal_unless_verbose(
    seaweedfs, s3_bucket: Callable, tmp_path: Path
) -> None:
    """botocore's "Found credentials in environment variables" on every S3 command is a
    library's INFO line: shown with `ensgan -v` only. The command's own output is the same."""
    import os
    import subprocess

    from tests.helpers import venv_tool

    ensgan = venv_tool("ensgan")
    assert ensgan, "the ensgan command is not installed beside this Python"
    bucket = s3_bucket(seaweedfs)
    args = ["batches", "ls", "--store", f"s3://{bucket}/nightly",
            "--endpoint-url", seaweedfs.endpoint_url]  # fmt: skip
    ran = {}
    for flags in ([], ["-v"]):
        res = subprocess.run(
            [ensgan, *flags, *args],
            cwd=tmp_path,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        ran[bool(flags)] = res
    assert "Found credentials" not in ran[False].stderr
    assert "Found credentials" in ran[True].stderr
    assert ran[False].stdout == ran[True].stdout


def test_the_night_summary_ends_with_how_to_commit_a_baseline() -> None:
    """`ensgan run` in a DVC project ends with the commands that make the night the baseline
    of `dvc metrics diff` (its files are what evaluate writes as DVC's metrics); outside one,
    no such line."""
    from ensgan.layout import Layout
    from ensgan.orchestration.summary import night_summary

    night = {
        "batch": {"run_id": "night-1", "n_images": 40},
        "method": "mh",
        "published": {"status": "published", "prefix": "batches/night-1",
                      "gate": {"decision": "promoted", "latest": "night-1"}},
        "report": "reports/index.html",
        "dvc": {"recorded": True, "status": {}, "pushed_to": None, "seconds": 1.0},
    }  # fmt: skip
    last = night_summary(night)[-1]
    assert last.startswith("baseline:  git add dvc.lock ") and len(last) <= 100
    assert Layout().key_figures.as_posix() in last and last.endswith("dvc metrics diff")
    unrecorded = {**night, "dvc": {"recorded": False, "why": "not a DVC project"}}
    assert not any(line.startswith("baseline:") for line in night_summary(unrecorded))
