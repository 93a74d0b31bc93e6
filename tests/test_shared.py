"""`train_shared` (ensgan/gan/shared.py): the members as MGAN's heads in one run, each head
exported as a member that loads, samples and scores as one, and the run resumed exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ensgan import stopping
from ensgan.config import MemberConfig, TrainConfig
from ensgan.data.prepared import read_data_card
from ensgan.errors import ConfigError, StopRequested
from ensgan.gan.checkpoint import weights_sha256
from ensgan.gan.loaded import load_member
from ensgan.gan.member import fingerprint, train_member
from ensgan.gan.mgan import MultiHeadGenerator
from ensgan.gan.shared import SHARED, train_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = TrainConfig(steps=6, batch_size=16, z_dim=8, checkpoint_every=3, log_every=2)
MEMBERS = {
    "a": MemberConfig(arch="dcgan", seed=3, width=4),
    "b": MemberConfig(arch="dcgan", seed=4, width=4),
}


@pytest.fixture(scope="module")
def data_dir(prepared_digits) -> Path:
    return prepared_digits(16)


def test_each_head_is_a_finished_member_that_samples_and_scores(
    data_dir: Path, tmp_path: Path
) -> None:
    cards = train_shared(MEMBERS, TRAIN, data_dir, tmp_path, progress=False)
    assert list(cards) == ["a", "b"]
    a, b = (load_member(tmp_path / n) for n in "ab")
    assert a.card.steps == 6 and a.card.bootstrap is False  # a head sees the whole split
    assert a.card.n_unique_images == a.card.n_train
    z = torch.randn(8, 8)
    xa, xb = a.generate_u8(z), b.generate_u8(z)
    assert xa.shape == (8, 1, 16, 16) and not torch.equal(xa, xb)  # two heads, two images
    images = xa.numpy()
    np.testing.assert_array_equal(a.logits(images), b.logits(images))  # one shared D
    assert a.card.weights_sha256 != b.card.weights_sha256
    sha = read_data_card(data_dir).sha256
    assert a.card.fingerprint != fingerprint(sha, MEMBERS["a"].model_copy(
        update={"bootstrap": False}), TRAIN)  # fmt: skip
    for n in "ab":  # what evaluate and the report read of a member
        assert (tmp_path / n / "losses.csv").read_text().count("\n") == 4  # header + 3 rows
        assert sorted(p.name for p in (tmp_path / n / "grids").iterdir()) == [
            "step-0000003.png", "step-0000006.png",
        ]  # fmt: skip
    state = json.loads((tmp_path / SHARED / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = train_shared(MEMBERS, TRAIN, data_dir, tmp_path, progress=False)
    assert again == cards  # finished: nothing trained, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_heads_are_the_runs_heads(data_dir: Path, tmp_path: Path) -> None:
    """Each exported head's EMA generator is head i of the run's EMA generator."""
    from safetensors.torch import load_file

    from ensgan.gan.checkpoint import load_weights_into

    train_shared(MEMBERS, TRAIN, data_dir, tmp_path, progress=False)
    g = MultiHeadGenerator("dcgan", 2, z_dim=8, size=16, channels=1, width=4)
    path = tmp_path / SHARED / "checkpoint" / "generator_ema.safetensors"
    load_weights_into(g, path, "cpu")
    assert not any(k.startswith("heads.1.main.3") for k in load_file(path))  # the trunk once
    g.eval()
    z = torch.randn(4, 8)
    with torch.no_grad():
        x = g(z)
    for i, n in enumerate("ab"):
        head = load_member(tmp_path / n)
        torch.testing.assert_close(head.generate(z[2 * i : 2 * i + 2]), x[2 * i : 2 * i + 2])


def test_a_stopped_or_extended_run_resumes_exactly(data_dir: Path, tmp_path: Path) -> None:
    whole = train_shared(MEMBERS, TRAIN, data_dir, tmp_path / "whole", progress=False)
    half = TRAIN.model_copy(update={"steps": 3})
    train_shared(MEMBERS, half, data_dir, tmp_path / "more", progress=False)
    more = train_shared(MEMBERS, TRAIN, data_dir, tmp_path / "more", progress=False)

    def stop_at_4(step: int) -> None:
        if step == 4:
            stopping.request("the test asks")

    with pytest.raises(StopRequested, match="stopped at step 4 of 6"):
        train_shared(MEMBERS, TRAIN, data_dir, tmp_path / "cut", callback=stop_at_4,
                     progress=False)  # fmt: skip
    stopping.clear()
    assert not (tmp_path / "cut" / "a" / "card.json").exists()  # not finished: no card
    cut = train_shared(MEMBERS, TRAIN, data_dir, tmp_path / "cut", progress=False)
    for n in "ab":
        assert more[n].weights_sha256 == whole[n].weights_sha256 == cut[n].weights_sha256


def test_beta_and_the_members_are_the_runs_identity(data_dir: Path, tmp_path: Path) -> None:
    zero, one = (TRAIN.model_copy(update={"mgan_beta": b}) for b in (0.0, 1.0))
    plain = train_shared(MEMBERS, zero, data_dir, tmp_path / "x", progress=False)
    pushed = train_shared(MEMBERS, one, data_dir, tmp_path / "y", progress=False)
    assert plain["a"].fingerprint != pushed["a"].fingerprint
    assert plain["a"].weights_sha256 != pushed["a"].weights_sha256
    alone = train_member("a", MEMBERS["a"], TRAIN, data_dir, tmp_path / "x" / "a", progress=False)
    assert alone.fingerprint != plain["a"].fingerprint  # a bagged member where head a was
    (tmp_path / "x" / "a" / "grids" / "step-0000001.png").write_bytes(b"an earlier grid")
    again = train_shared(MEMBERS, zero, data_dir, tmp_path / "x", progress=False)
    assert again["a"].weights_sha256 == plain["a"].weights_sha256  # the run was finished
    assert not (tmp_path / "x" / "a" / "grids" / "step-0000001.png").exists()  # re-exported
    state = json.loads((tmp_path / "x" / "a" / "checkpoint" / "state.json").read_text())
    assert state["fingerprint"] == plain["a"].fingerprint  # the head's weights, not the member's
    head = load_member(tmp_path / "x" / "a")
    assert weights_sha256(head.generator, head.discriminator) == plain["a"].weights_sha256


@pytest.mark.parametrize(
    ("members", "train", "match"),
    [
        ({"a": MEMBERS["a"]}, TRAIN, "at least 2 members"),
        ({**MEMBERS, "c": MemberConfig(arch="mlp", width=4)}, TRAIN, "c differ"),
        ({**MEMBERS, "c": MemberConfig(arch="dcgan", width=4)},
         TRAIN.model_copy(update={"batch_size": 16}), "does not split evenly over 3"),
    ],
)  # fmt: skip
def test_what_cannot_be_a_shared_run_is_refused(data_dir, tmp_path, members, train, match):
    with pytest.raises(ConfigError, match=match):
        train_shared(members, train, data_dir, tmp_path, progress=False)
