"""MGAN's parts (ensgan/gan/mgan.py): heads over one tied trunk, each an ordinary generator;
the which-generator head's loss and gradient on known cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ensgan.gan.loop import gan_step
from ensgan.gan.losses import make_loss
from ensgan.gan.mgan import MultiHeadGenerator, WhichGenerator, WhichTerm
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


def _step(beta: float | None) -> tuple[float, list[torch.Tensor]]:
    """One gan_step at learning rate 0 from the same start: its D loss and G's gradients
    (beta None: the plain GAN step, no which-generator term)."""
    g, d, head, real = _setup()
    d.eval()  # spectral norm's power iteration would move between the passes compared
    opt_g = torch.optim.SGD(g.parameters(), lr=0.0)
    opt_d = torch.optim.SGD([*d.parameters(), *head.parameters()], lr=0.0)
    term = None if beta is None else WhichTerm(head, g.labels(8), beta)
    z = torch.randn(8, SHAPE["z_dim"], generator=torch.Generator().manual_seed(3))
    d_loss, _, _, _ = gan_step(
        g, [d], opt_g, opt_d, make_loss("non_saturating"), real, z, (), torch.Generator(), term
    )
    return d_loss.item(), [p.grad.clone() for p in g.parameters()]


def _ce_grads() -> tuple[float, list[torch.Tensor]]:
    """The which-head's cross-entropy on that step's fakes, and its gradient for G."""
    g, d, head, _ = _setup()
    d.eval()
    z = torch.randn(8, SHAPE["z_dim"], generator=torch.Generator().manual_seed(3))
    ce = F.cross_entropy(head(hidden_and_logit(d, g(z))[0]), g.labels(8))
    return ce.item(), list(torch.autograd.grad(ce, list(g.parameters())))


def test_the_losses_are_the_codes_and_beta_scales_the_classifier_term() -> None:
    """D: its GAN loss + the CE (weight 1); G: its GAN loss + beta x the same CE. beta = 0 is
    exactly the plain GAN's generator update; beta > 0 adds beta x the CE's gradient."""
    plain_d, plain = _step(None)
    zero_d, zero = _step(0.0)
    half_d, half = _step(0.5)
    ce, ce_grads = _ce_grads()
    assert zero_d == pytest.approx(plain_d + ce, rel=1e-5) and half_d == pytest.approx(zero_d)
    for a, b, c, e in zip(zero, plain, half, ce_grads, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, b + 0.5 * e)
    assert any(e.abs().sum() > 0 for e in ce_grads)  # the CE reaches the generators


def _train(beta: float, steps: int = 40) -> float:
    """A few MGAN steps on a toy; the which-head's cross-entropy on fresh fakes at the end."""
    g, d, head, _ = _setup(seed=1)
    real_set = torch.rand(256, 1, 16, 16) * 2 - 1
    opt_d = torch.optim.Adam([*d.parameters(), *head.parameters()], 2e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(2)
    term, loss = WhichTerm(head, g.labels(16), beta), make_loss("non_saturating")
    for _ in range(steps):
        real = real_set[torch.randint(256, (16,), generator=gen)]
        z = torch.randn(16, SHAPE["z_dim"], generator=gen)
        gan_step(g, [d], opt_g, opt_d, loss, real, z, (), gen, term)
    g.eval()
    with torch.no_grad():
        fake = g(torch.randn(64, SHAPE["z_dim"], generator=gen))
        return F.cross_entropy(head(hidden_and_logit(d, fake)[0]), g.labels(64)).item()


def test_beta_pushes_the_heads_apart() -> None:
    """With beta > 0 the generators help the which-head: after the same steps from the same
    start, it tells their fakes apart better than with beta = 0 (ln 2 is chance)."""
    apart, alone = _train(beta=1.0), _train(beta=0.0)
    assert apart < alone and apart < 0.9 * 0.6931
