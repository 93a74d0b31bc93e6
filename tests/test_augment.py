"""DiffAugment (ensgan/gan/augment.py): each policy keeps shapes and gradients, draws only from
the step's generator (so a resumed member trains exactly as an uninterrupted one), and a member
trained with it does so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ensgan.config import ConfigError, MemberConfig, TrainConfig, parse_params
from ensgan.gan import augment
from ensgan.gan.member import train_member

ALL = ["color", "translation", "cutout"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ALL)
def test_each_policy_keeps_the_shape_passes_gradients_and_is_seeded(policy: str) -> None:
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    out = augment.diff_augment(x, [policy], _gen())
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    again = augment.diff_augment(x.detach(), [policy], _gen())
    torch.testing.assert_close(out.detach(), again)
    assert not torch.equal(again, augment.diff_augment(x.detach(), [policy], _gen(1)))


def test_translation_moves_by_at_most_an_eighth_and_pads_with_zeros() -> None:
    x = torch.zeros(50, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one lit pixel
    out = augment.translation(x, _gen())
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(50))  # moved, never lost
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 16, pos % 16
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # per image


def test_cutout_zeroes_at_most_a_quarter_and_color_is_per_image() -> None:
    x = torch.ones(20, 3, 16, 16)
    cut = augment.cutout(x, _gen())
    zeros = (cut == 0).all(dim=1).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()
    lit = torch.rand(20, 3, 8, 8, generator=_gen(5))
    shifted = augment.brightness(lit, _gen()) - lit
    per_image = shifted.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image[:, 0].abs().max() <= 0.5 and per_image[:, 0].std() > 0


def test_no_policy_draws_nothing_and_changes_nothing() -> None:
    from ensgan.gan.loop import seen_by_d

    x, gen = torch.rand(2, 1, 8, 8), _gen()
    assert seen_by_d(x, [], gen) is x
    assert torch.equal(torch.rand(1, generator=gen), torch.rand(1, generator=_gen()))


@pytest.fixture(scope="module")
def data_dir(prepared_digits) -> Path:
    return prepared_digits(8)


def test_a_member_with_diffaugment_trains_and_resumes_exactly(
    data_dir: Path, tmp_path: Path, one_torch_thread
) -> None:
    train = TrainConfig(steps=8, batch_size=16, z_dim=8, checkpoint_every=4, log_every=2)
    member = MemberConfig(arch="resnet", width=4, seed=2, diffaugment=ALL)
    whole = train_member("r", member, train, data_dir, tmp_path / "whole", progress=False)
    half = train.model_copy(update={"steps": 4})
    train_member("r", member, half, data_dir, tmp_path / "resumed", progress=False)
    resumed = train_member("r", member, train, data_dir, tmp_path / "resumed", progress=False)
    assert resumed.weights_sha256 == whole.weights_sha256
    plain = train_member(
        "r", member.model_copy(update={"diffaugment": []}), train, data_dir, tmp_path / "plain",
        progress=False,
    )  # fmt: skip
    assert plain.weights_sha256 != whole.weights_sha256  # what D saw was augmented
    assert plain.fingerprint != whole.fingerprint


def test_policies_are_named_once_from_the_three() -> None:
    with pytest.raises(ConfigError, match="names a policy twice"):
        parse_params({"members": {"a": {"diffaugment": ["color", "color"]}}})
    with pytest.raises(ConfigError, match="diffaugment"):
        parse_params({"members": {"a": {"diffaugment": ["rotate"]}}})
