"""A member that fails does not sink the night while `train.min_members` finished: the
run stacks, evaluates and generates from the survivors and names who was left out; below
that it stops with a message naming the members."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ensgan.config import ConfigError, load_params, parse_params
from ensgan.errors import CardError, TooFewMembersError, is_user_error
from ensgan.layout import Layout
from ensgan.pipeline.survivors import finished_again, left_out, record, settle, survivors
from tests.helpers import tiny_params, write_tiny_project

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THREE = {
    "a": {"arch": "dcgan", "seed": 1, "width": 8},
    "b": {"arch": "upsample", "seed": 2, "width": 4},
    "c": {"arch": "mlp", "seed": 3, "width": 8},
}


def _params(min_members: int | None, **combine):
    text = tiny_params(members=THREE, train={"min_members": min_members}, combine=combine)
    return parse_params(yaml.safe_load(text))


def test_min_members_cannot_exceed_the_members() -> None:
    with pytest.raises(ConfigError, match="min_members is 4, but params.yaml lists 3 members"):
        _params(4)


def test_settle_records_the_failed_or_stops_naming_them(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    settle(_params(2), layout, {"c": "DivergedError: loss nan"})
    assert left_out(layout) == {"c": "DivergedError: loss nan"}
    with pytest.raises(TooFewMembersError) as err:
        settle(_params(2), layout, {"b": "OSError: disk", "c": "DivergedError: loss nan"})
    assert "only 1 of 3 members finished (a)" in str(err.value)
    assert "b: OSError: disk; c: DivergedError: loss nan" in str(err.value)
    assert is_user_error(err.value)  # one line, not retried
    with pytest.raises(TooFewMembersError, match="min_members is 3"):
        settle(_params(None), layout, {"c": "x"})  # unset: every member must finish
    settle(_params(2), layout, {})  # a night where every member finished clears the record
    assert left_out(layout) == {} and not (layout.members / "left_out.json").exists()


def test_survivors_drop_the_left_out_and_their_weight(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    params = _params(2, weights={"a": 1.0, "b": 1.0, "c": 2.0})
    assert survivors(params, layout) is params  # nobody left out
    record(layout, {"c": "x"})
    kept = survivors(params, layout)
    assert list(kept.members) == ["a", "b"] and kept.mixture_weights() == {"a": 0.5, "b": 0.5}
    finished_again(layout, "c")  # `ensgan train c` brought it back
    assert survivors(params, layout).members.keys() == params.members.keys()
    record(layout, {"zz": "x"})
    with pytest.raises(CardError, match="leaves out \\['zz'\\]"):
        survivors(params, layout)


def test_a_failed_member_is_left_out_by_train_stack_and_generate(tmp_path: Path) -> None:
    """The `dvc repro` path: `ensgan train` trains a and b, records c (a file stands where
    its folder must go), and stack and generate work on a and b."""
    from ensgan.pipeline import generate, prepare, stack, train

    root = write_tiny_project(tmp_path / "p", members=THREE, train={"min_members": 2})
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    layout.members.mkdir(parents=True)
    (layout.members / "c").write_text("not a folder")
    cards = train.run(params, layout)
    assert set(cards) == {"a", "b"}
    assert list(left_out(layout)) == ["c"] and "NotADirectoryError" in left_out(layout)["c"]
    assert stack.run(params, layout)["members"] == ["a", "b"]
    batch = generate.run(params, layout)
    meta = json.loads((layout.batches / batch["run_id"] / "batch.json").read_text())
    assert list(meta["left_out"]) == ["c"]
    rows = (layout.batches / batch["run_id"] / "manifest.jsonl").read_text().splitlines()
    assert {json.loads(r)["member"] for r in rows} <= {"a", "b"}

    strict = write_tiny_project(tmp_path / "q", members=THREE, train={"min_members": 3})
    (strict / "data").mkdir()
    (strict / "data" / "prepared").symlink_to(layout.prepared)
    shutil.copytree(layout.members, strict / "models" / "members")  # a and b: finished
    (strict / "models" / "members" / "left_out.json").unlink()
    with pytest.raises(TooFewMembersError, match=r"only 2 of 3 .*c: NotADirectoryError"):
        train.run(load_params(strict / "params.yaml"), Layout(strict))
