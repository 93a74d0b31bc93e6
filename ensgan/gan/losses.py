"""GAN losses as small objects, each owning its discriminator and generator terms (torchgan).

Both terms take a list of discriminator logits, one tensor per discriminator, so a member with
several discriminators (GMAN) needs a new loss object, not a new loop. With one discriminator
the list has one element. Names are registered in ensgan/registry.py LOSSES.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ensgan.registry import LOSSES


class GANLoss(Protocol):
    identity: str  # its name and settings: part of the fingerprint of a member trained with it

    def d_loss(self, real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
        """What the discriminators minimise, from their logits on real and generated images."""
        ...

    def g_loss(self, fake: list[torch.Tensor]) -> torch.Tensor:
        """What the generator minimises, from the discriminators' logits on its images."""
        ...


class NonSaturating:
    """Real -> 1, fake -> 0 for D; -log D(G(z)) for G (Goodfellow et al. 2014, section 3).
    Several discriminators' terms are averaged."""

    identity = "non_saturating"

    def d_loss(self, real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
        terms = [
            F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real, fake, strict=True)
        ]
        return torch.stack(terms).mean()

    def g_loss(self, fake: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([F.softplus(-f).mean() for f in fake]).mean()


def make_loss(name: str) -> GANLoss:
    """The registered loss called `name`."""
    return LOSSES.load(name)()
