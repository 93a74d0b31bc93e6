"""MGAN's parts (ensgan/gan/mgan.py): heads over one tied trunk, each an ordinary generator;
the which-generator head's loss and gradient on known cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ensgan.gan.losses import make_loss
from ensgan.gan.mgan import MultiHeadGenerator, WhichGenerator, mgan_losses
from ensgan.gan.models import build_pair, hidden_and_logit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = {"z_dim": 8, "size": 16, "channels": 1, "width": 4}


@pytest.mark.parametrize("arch", ["dcgan", "upsample", "mlp", "resnet"])
def test_each_head_is_an_ordinary_generator_over_the_shared_trunk(arch: str) -> None:
    torch.manual_seed(0)
    g = MultiHeadGenerator(arch, 3, **SHAPE).eval()
    z = torch.randn(6, SHAPE["z_dim"])
    with torch.no_grad():
        x = g(z)
        for i in range(3):  # block i of a batch is head i's images, as the head alone makes them
            torch.testing.assert_close(g.head(i)(z[2 * i : 2 * i + 2]), x[2 * i : 2 * i + 2])
    assert g.labels(6).tolist() == [0, 0, 1, 1, 2, 2]
    own = {id(p) for p in g.head(1).parameters()} - {id(p) for p in g.head(0).parameters()}
    shared = sum(p.numel() for p in g.head(0).parameters()) - sum(
        p.numel() for p in g.head(1).parameters() if id(p) in own
    )
    assert len(own) > 0 and shared > 0  # the input layer its own, the rest head 0's
    alone = build_pair(arch, **SHAPE)[0].eval()  # the state dict of a head is a member's
    alone.load_state_dict(g.head(2).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(alone(z[4:]), x[4:])


def test_training_gives_every_head_the_same_latents_and_sampling_its_own() -> None:
    g = MultiHeadGenerator("mlp", 2, **SHAPE)
    with torch.no_grad():
        g.train()
        z = torch.randn(4, SHAPE["z_dim"])
        x = g(z)
        g.eval()
        same = g(torch.cat([z[:2], z[:2]]))
    torch.testing.assert_close(g.head(0).eval()(z[:2]), same[:2])
    assert not torch.allclose(x[:2], x[2:])  # one latent, two heads: two different images
    with pytest.raises(ValueError, match="does not split over 2"):
        g(torch.randn(3, SHAPE["z_dim"]))
    with pytest.raises(ValueError, match="at least 2"):
        MultiHeadGenerator("mlp", 1, **SHAPE)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    g = MultiHeadGenerator("dcgan", 2, **SHAPE)
    d = build_pair("dcgan", **SHAPE)[1]
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    which = WhichGenerator(d, 2, real)
    return g, d, which, real


def _grads(module: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if x is None else x for x, p in zip(got, params, strict=True)]


def test_the_losses_are_the_codes_and_beta_scales_the_classifier_term() -> None:
    """D: its GAN loss + the CE (weight 1); G: its GAN loss + beta x the same CE. beta = 0 is
    exactly the plain GAN's generator update; beta > 0 adds beta x the CE's gradient."""
    g, d, which, real = _setup()
    d.eval()  # spectral norm's power iteration would move between the passes compared
    loss = make_loss("non_saturating")
    z = torch.randn(8, SHAPE["z_dim"])
    fake = g(z)
    labels = g.labels(8)
    d_loss, g_loss_at = mgan_losses(d, which, real, fake, labels, loss, beta=0.0)
    h, logit = hidden_and_logit(d, fake)
    ce = F.cross_entropy(which(h), labels)
    plain_d = loss.d_loss([d(real)], [logit])
    torch.testing.assert_close(d_loss, plain_d + ce)
    plain_g = loss.g_loss([logit])
    torch.testing.assert_close(g_loss_at(), plain_g)
    for a, b in zip(_grads(g, g_loss_at()), _grads(g, plain_g), strict=True):
        torch.testing.assert_close(a, b)
    _, with_beta = mgan_losses(d, which, real, fake, labels, loss, beta=0.5)
    for a, b, c in zip(_grads(g, with_beta()), _grads(g, plain_g), _grads(g, ce), strict=True):
        torch.testing.assert_close(a, b + 0.5 * c)
    assert any(x.abs().sum() > 0 for x in _grads(g, ce))  # the CE reaches the generators


def _train(beta: float, steps: int = 40) -> float:
    """A few MGAN steps on a toy; the which-head's cross-entropy on fresh fakes at the end."""
    g, d, which, _ = _setup(seed=1)
    loss = make_loss("non_saturating")
    real_set = torch.rand(256, 1, 16, 16) * 2 - 1
    opt_d = torch.optim.Adam([*d.parameters(), *which.parameters()], 2e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        real = real_set[torch.randint(256, (16,), generator=gen)]
        fake = g(torch.randn(16, SHAPE["z_dim"], generator=gen))
        d_loss, g_loss_at = mgan_losses(d, which, real, fake, g.labels(16), loss, beta=beta)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss_at().backward()
        opt_g.step()
    g.eval()
    with torch.no_grad():
        fake = g(torch.randn(64, SHAPE["z_dim"], generator=gen))
        h = hidden_and_logit(d, fake)[0]
        return F.cross_entropy(which(h), g.labels(64)).item()


def test_beta_pushes_the_heads_apart() -> None:
    """With beta > 0 the generators help the which-head: after the same steps from the same
    start, it tells their fakes apart better than with beta = 0 (ln 2 is chance)."""
    apart, alone = _train(beta=1.0), _train(beta=0.0)
    assert apart < alone and apart < 0.9 * 0.6931
