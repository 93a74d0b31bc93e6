"""Losses: non-saturating and hinge terms, GMAN's aggregations, GMAN*'s learned λ, and a member
with several discriminators trained, resumed and loaded for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ensgan.config import MemberConfig, TrainConfig
from ensgan.data.prepared import prepare
from ensgan.gan.checkpoint import CHECKPOINT
from ensgan.gan.loaded import load_member
from ensgan.gan.losses import LAMBDA_PENALTY, GeneratorAggregate, Hinge, NonSaturating, make_loss
from ensgan.gan.member import train_member
from ensgan.gan.models import MultiDiscriminator


def test_non_saturating_and_hinge_terms() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    ns, hinge = NonSaturating(), Hinge()
    expected_d = F.softplus(-real).mean() + F.softplus(fake).mean()
    torch.testing.assert_close(ns.d_loss([real], [fake]), expected_d)
    torch.testing.assert_close(ns.g_loss([fake]), F.softplus(-fake).mean())
    # Hinge: relu(1 - 2) + relu(1 + 1) = 0 + 2 on real; relu(1.5) + relu(-2) on fake.
    torch.testing.assert_close(hinge.d_loss([real], [fake]), torch.tensor(1.0 + 0.75))
    torch.testing.assert_close(hinge.g_loss([fake]), torch.tensor(1.25))
    assert (ns.identity, hinge.identity) == ("non_saturating", "hinge")
    assert make_loss("hinge", "max").identity == "hinge+gman-max"
    assert (
        make_loss("non_saturating", "softmax", 2.0).identity == "non_saturating+gman-softmax(λ=2)"
    )


def test_gman_aggregations() -> None:
    terms = torch.tensor([1.0, 2.0, 4.0])
    assert GeneratorAggregate("mean")(terms) == pytest.approx(7 / 3)
    assert GeneratorAggregate("max")(terms) == pytest.approx(4.0)
    soft = GeneratorAggregate("softmax", lam=1.0)(terms)
    w = torch.softmax(terms, 0)
    assert soft == pytest.approx(float((w * terms).sum()))
    # λ = 0 is the mean; a large λ tends to the max.
    assert GeneratorAggregate("softmax", lam=0.0)(terms) == pytest.approx(7 / 3)
    assert GeneratorAggregate("softmax", lam=50.0)(terms) == pytest.approx(4.0, abs=1e-3)
    # One discriminator: every aggregate is the term itself.
    for kind in ("mean", "max", "softmax", "learned"):
        assert GeneratorAggregate(kind)(torch.tensor([3.0])) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown aggregate"):
        GeneratorAggregate("median")
    with pytest.raises(ValueError, match="λ must be >= 0"):
        GeneratorAggregate("softmax", lam=-1.0)


def test_gman_star_lambda_gradient() -> None:
    """F = Σ softmax(λL)·L − 0.001 λ with λ = softplus(θ): dF/dλ = Var_w(L) − 0.001, so the
    generator lowers λ while its terms disagree, and raises it once they agree."""
    agg = GeneratorAggregate("learned")
    lam = F.softplus(agg.theta).item()
    assert lam == pytest.approx(F.softplus(torch.tensor(-2.0)).item())  # the official start
    terms = torch.tensor([1.0, 2.0, 4.0])
    agg(terms).backward()
    w = torch.softmax(lam * terms, 0)
    var_w = float((w * terms**2).sum() - (w * terms).sum() ** 2)
    dlam_dtheta = torch.sigmoid(torch.tensor(-2.0)).item()
    assert agg.theta.grad.item() == pytest.approx((var_w - LAMBDA_PENALTY) * dlam_dtheta, rel=1e-4)
    agg.theta.grad = None
    agg(torch.tensor([2.0, 2.0, 2.0])).backward()  # terms agree: only the penalty pulls
    assert agg.theta.grad.item() == pytest.approx(-LAMBDA_PENALTY * dlam_dtheta, rel=1e-4)
    assert agg.current_lambda() == pytest.approx(lam)


def test_gman_generator_gradient_favours_the_strongest_discriminator() -> None:
    """With max, only the discriminator the generator fools least moves the generator."""
    fake = [torch.tensor([0.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)]
    make_loss("non_saturating", "max").g_loss(fake).backward()
    assert fake[0].grad.abs().item() == 0.0 and fake[1].grad.abs().item() > 0


def test_non_saturating_with_one_discriminator_is_the_textbook_loss() -> None:
    real, fake = torch.randn(16), torch.randn(16)
    loss = NonSaturating()
    expected_d = F.softplus(-real).mean() + F.softplus(fake).mean()  # -log D(x) - log(1-D(G(z)))
    torch.testing.assert_close(loss.d_loss([real], [fake]), expected_d)
    torch.testing.assert_close(loss.g_loss([fake]), -F.logsigmoid(fake).mean())  # -log D(G(z))


def test_several_discriminators_are_averaged_and_all_get_gradients() -> None:
    loss = NonSaturating()
    a, b = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    r1, r2 = torch.randn(8), torch.randn(8)
    d = loss.d_loss([r1, r2], [a, b])
    torch.testing.assert_close(d, (loss.d_loss([r1], [a]) + loss.d_loss([r2], [b])) / 2)
    g = loss.g_loss([a, b])
    g.backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        loss.d_loss([r1, r2], [a])  # one fake logit set per discriminator


def test_make_loss_uses_the_registry() -> None:
    assert isinstance(make_loss("non_saturating"), NonSaturating)
    with pytest.raises(ValueError, match="choose from"):
        make_loss("hinge-ish")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ensgan.config import DataConfig

    out = tmp_path_factory.mktemp("gman") / "prepared"
    prepare(DataConfig(image_size=8), out)
    return out


TRAIN = TrainConfig(steps=12, batch_size=16, checkpoint_every=6, log_every=3, device="cpu")


def test_a_gman_star_member_trains_resumes_exactly_and_loads(
    data_dir: Path, tmp_path: Path, one_torch_thread
) -> None:
    member = MemberConfig(arch="dcgan", seed=3, width=4, discriminators=3, gman="learned")
    whole = train_member("g", member, TRAIN, data_dir, tmp_path / "whole", progress=False)
    assert whole.discriminators == 3 and whole.gman == "learned"
    assert whole.loss == "non_saturating+gman-learned"
    lam = whole.gman_lambda_final
    assert lam is not None and lam != pytest.approx(F.softplus(torch.tensor(-2.0)).item())

    # Stopped after the first checkpoint, then resumed: the same weights and the same λ.
    half = TRAIN.model_copy(update={"steps": 6})
    train_member("g", member, half, data_dir, tmp_path / "resumed", progress=False)
    optim = torch.load(tmp_path / "resumed" / CHECKPOINT / "optim.pt", weights_only=True)
    assert "aggregate.theta" in optim["loss"]
    resumed = train_member("g", member, TRAIN, data_dir, tmp_path / "resumed", progress=False)
    assert resumed.weights_sha256 == whole.weights_sha256
    assert resumed.gman_lambda_final == pytest.approx(lam, abs=0)

    loaded = load_member(tmp_path / "whole")
    assert isinstance(loaded.discriminator, MultiDiscriminator)
    assert len(loaded.discriminator.members) == 3
    images = loaded.generate_u8(torch.randn(5, TRAIN.z_dim))
    assert loaded.score(images).shape == (5,)
    card = json.loads((tmp_path / "whole" / "card.json").read_text())
    assert card["discriminators"] == 3


def test_a_hinge_member_trains(data_dir: Path, tmp_path: Path, one_torch_thread) -> None:
    train = TRAIN.model_copy(update={"loss": "hinge", "steps": 6})
    card = train_member(
        "h", MemberConfig(width=4, seed=1), train, data_dir, tmp_path, progress=False
    )
    assert card.loss == "hinge" and card.gman_lambda_final is None
