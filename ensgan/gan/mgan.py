"""MGAN (Hoang et al., ICLR 2018): K generators sharing all but their input layer, against one
discriminator that also says which generator made each fake.

Read from the official code (github.com/qhoangdl/MGAN, `models.py`): each generator owns only
its input layer (z -> the first feature map, with its batch norm); the heads' first maps are
concatenated along the batch and go through the shared rest at once (its batch norms see all K
heads' samples together); the discriminator's trunk feeds a real/fake logit and a K-way
linear "which generator" head, which sees only fakes. The losses (ensgan.gan.loop.gan_step
with a `WhichTerm`):

    D: BCE(real -> 1) + BCE(fake -> 0) + CE(which(fake), head)      (the CE at weight 1)
    G: BCE(fake -> 1) + beta * CE(which(fake), head)                (beta = 0.01 in main.py)

so the generators minimise the classifier's cross-entropy with it: each head is pushed to make
samples the others do not. In training every head gets the same latents (`same_input`, the
code's default); sampling draws each head's own.

Here the shared part is tied, not copied: head i is a whole generator of the package's
architecture whose trunk modules are head 0's, so `head(i)` is an ordinary generator (its
state dict loads into `build_pair`'s) and each head can be exported as a member. The
discriminator is the package's (spectral norm, no batch norm: a member's score of an image does
not depend on its batch), where the code's has batch norm; the which-head reads its last hidden
layer (`hidden_and_logit`), the layer its logit is a linear function of.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ensgan.gan.models import (
    DCGANGenerator,
    MLPGenerator,
    UpsampleGenerator,
    build_pair,
    hidden_and_logit,
)
from ensgan.gan.resnet import ResNetGenerator

BETA = 0.01  # main.py's default


def _embed(g: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """A generator's own input layer: z -> its first feature map (after its batch norm)."""
    if isinstance(g, DCGANGenerator):
        return g.main[:3](z[:, :, None, None])
    if isinstance(g, MLPGenerator):
        return g.main[:3](z)
    if isinstance(g, UpsampleGenerator):
        return g.fc(z).view(len(z), g.ch, 4, 4)
    if isinstance(g, ResNetGenerator):
        return g.l1(z).view(len(z), g.ch, 4, 4)
    raise TypeError(f"MGAN has no input layer for {type(g).__name__}")


def _render(g: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The rest of the generator, from the first feature map to images."""
    if isinstance(g, DCGANGenerator):
        return g.main[3:](h)
    if isinstance(g, MLPGenerator):
        return g.main[3:](h).view(len(h), *g.shape)
    return g.main(h)  # upsample, resnet: `main` is everything after the input layer


def _tie_trunk(g: nn.Module, to: nn.Module) -> None:
    """Make every module of `g` after its input layer the very module of `to`."""
    if isinstance(g, DCGANGenerator | MLPGenerator):
        for j in range(3, len(g.main)):
            g.main[j] = to.main[j]
    else:
        g.main = to.main


class MultiHeadGenerator(nn.Module):
    """K generators of one architecture over one shared trunk; forward(z) splits the batch
    into K equal blocks, block k from head k (the fakes' head labels: `labels(len(z))`)."""

    def __init__(
        self, arch: str, k: int, *, z_dim: int, size: int, channels: int, width: int,
        same_input: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if k < 2:
            raise ValueError(f"MGAN needs at least 2 generators, got {k}")
        heads = [
            build_pair(arch, z_dim=z_dim, size=size, channels=channels, width=width)[0]
            for _ in range(k)
        ]
        for g in heads[1:]:
            _tie_trunk(g, heads[0])
        self.heads = nn.ModuleList(heads)
        self.k, self.z_dim, self.same_input = k, z_dim, same_input

    def head(self, i: int) -> nn.Module:
        """Head i as an ordinary generator (its trunk is the shared one)."""
        return self.heads[i]

    def labels(self, n: int) -> torch.Tensor:
        """Which head made each of forward's n images: K blocks of n // K."""
        return torch.arange(self.k).repeat_interleave(self._per_head(n))

    def _per_head(self, n: int) -> int:
        if n % self.k:
            raise ValueError(f"a batch of {n} does not split over {self.k} generators")
        return n // self.k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        per = self._per_head(len(z))
        zs = [z[:per]] * self.k if self.same_input and self.training else z.split(per)
        h = torch.cat([_embed(g, zi) for g, zi in zip(self.heads, zs, strict=True)])
        return _render(self.heads[0], h)


class WhichGenerator(nn.Module):
    """The discriminator's K-way head: a linear map of its last hidden layer."""

    def __init__(self, d: nn.Module, k: int, sample: torch.Tensor) -> None:
        super().__init__()
        with torch.no_grad():
            hidden = hidden_and_logit(d, sample[:2])[0].shape[1]
        self.linear = nn.Linear(hidden, k)
        nn.init.normal_(self.linear.weight, 0.0, 0.01)  # ops.py `linear`: N(0, 0.01), bias 0
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


@dataclass
class WhichTerm:
    """What the training loop (ensgan.gan.loop.gan_step) adds for MGAN: the which-generator
    head (trained by D's optimiser) and which head made each of a step's fakes."""

    head: WhichGenerator
    labels: torch.Tensor  # MultiHeadGenerator.labels(batch_size), on the device
    beta: float = BETA

    def logits_and_ce(
        self, d: nn.Module, fake: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """D's logits for `fake` and the head's cross-entropy on them, from one pass of D."""
        h, logit = hidden_and_logit(d, fake)
        return [logit.float()], F.cross_entropy(self.head(h).float(), self.labels)  # bf16: fp32
