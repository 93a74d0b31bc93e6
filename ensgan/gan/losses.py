"""GAN losses as small objects, each owning its discriminator and generator terms (torchgan).

Both terms take a list of discriminator logits, one tensor per discriminator, so a member with
several discriminators (GMAN) needs no new loop. With one discriminator the list has one
element. How the generator's per-discriminator terms are combined is a `GeneratorAggregate`:
GMAN (Durugkar, Gemp, Mahadevan, ICLR 2017; official code iDurugkar/GMAN, `GMAN.py::get_G_loss`
and `helper.py::mix_prediction`):
- mean: GMAN-0, the average of the terms;
- max: GMAN-max, the largest term (the discriminator the generator fools least);
- softmax: Σ_i softmax(λ L)_i L_i, weights not detached, as in the official code;
- learned: GMAN*, λ = softplus(θ) learned with the generator, which minimises the softmax form
  minus 0.001 λ (the paper's penalty; in the released code θ is in no optimiser and stays at
  its initial softplus(−2) ≈ 0.127, so this follows the paper).
Names are registered in ensgan/registry.py LOSSES; a loss with parameters (GMAN*'s θ) is an
nn.Module, trained by the generator's optimiser and saved in the checkpoint.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ensgan.registry import LOSSES

AGGREGATES = ("mean", "max", "softmax", "learned")
LAMBDA_PENALTY = 1e-3  # GMAN*: the generator minimises F_soft − 0.001 λ
THETA_INIT = -2.0  # GMAN*: λ = softplus(θ) starts at softplus(−2), as the official code


class GANLoss(Protocol):
    identity: str  # its name and settings: part of the fingerprint of a member trained with it

    def d_loss(self, real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
        """What the discriminators minimise, from their logits on real and generated images."""
        ...

    def g_loss(self, fake: list[torch.Tensor]) -> torch.Tensor:
        """What the generator minimises, from the discriminators' logits on its images."""
        ...


class GeneratorAggregate(nn.Module):
    """Combines the generator's per-discriminator loss terms (GMAN); `mean` for one."""

    def __init__(self, kind: str = "mean", lam: float = 1.0) -> None:
        super().__init__()
        if kind not in AGGREGATES:
            raise ValueError(f"unknown aggregate {kind!r}; choose from {AGGREGATES}")
        if lam < 0:
            raise ValueError(f"GMAN's λ must be >= 0, got {lam}")
        self.kind, self.lam = kind, float(lam)
        if kind == "learned":
            self.theta = nn.Parameter(torch.tensor(THETA_INIT))

    @property
    def identity(self) -> str:
        return f"{self.kind}(λ={self.lam:g})" if self.kind == "softmax" else self.kind

    def current_lambda(self) -> float | None:
        if self.kind == "learned":
            return float(F.softplus(self.theta).detach())
        return self.lam if self.kind == "softmax" else None

    def forward(self, terms: torch.Tensor) -> torch.Tensor:
        """`terms`: (N,) per-discriminator generator losses -> one scalar."""
        if self.kind == "mean" or len(terms) == 1:
            return terms.mean()
        if self.kind == "max":
            return terms.max()
        if self.kind == "softmax":
            return (torch.softmax(self.lam * terms, 0) * terms).sum()
        lam = F.softplus(self.theta)
        return (torch.softmax(lam * terms, 0) * terms).sum() - LAMBDA_PENALTY * lam


class _AggregatedLoss(nn.Module):
    name = ""

    def __init__(self, aggregate: GeneratorAggregate | None = None) -> None:
        super().__init__()
        self.aggregate = aggregate or GeneratorAggregate()

    @property
    def identity(self) -> str:
        agg = self.aggregate.identity
        return self.name if agg == "mean" else f"{self.name}+gman-{agg}"

    def d_term(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_term(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_loss(self, real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
        """Each discriminator's own loss, averaged (each learns on its own, as in GMAN)."""
        terms = [self.d_term(r, f) for r, f in zip(real, fake, strict=True)]
        return torch.stack(terms).mean()

    def g_loss(self, fake: list[torch.Tensor]) -> torch.Tensor:
        return self.aggregate(torch.stack([self.g_term(f) for f in fake]))


class NonSaturating(_AggregatedLoss):
    """Real -> 1, fake -> 0 for D; -log D(G(z)) for G (Goodfellow et al. 2014, section 3).
    An optimal D's logit is then log p_data/p_g, which the stacker builds on."""

    name = "non_saturating"

    def d_term(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_term(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake).mean()


class Hinge(_AggregatedLoss):
    """max(0, 1 − D(x)) + max(0, 1 + D(G(z))) for D; −D(G(z)) for G (Lim & Ye 2017; Miyato
    et al. 2018). Its logits are margins, not log-ratios: the stacker calibrates them."""

    name = "hinge"

    def d_term(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_term(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()


def make_loss(name: str, aggregate: str = "mean", lam: float = 1.0) -> GANLoss:
    """The registered loss called `name`, combining several discriminators by `aggregate`."""
    return LOSSES.load(name)(GeneratorAggregate(aggregate, lam))
