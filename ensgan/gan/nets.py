"""A member's networks and optimisers, built one way for training, for timing a training step
(ensgan/gan/schedule.py) and for the benchmark's GANs (ensgan/bench/methods.py).

Its own module, not ensgan.gan.models: sampling imports the architectures, and must not import
the training code (the loss, the optimisers) with them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ensgan.config import MemberConfig, TrainConfig
from ensgan.gan.losses import GANLoss
from ensgan.gan.models import build_pair, discriminator_list


@dataclass
class Nets:
    generator: nn.Module
    generator_ema: nn.Module  # the EMA of the generator's weights, in eval mode, no grads
    discriminator: nn.Module  # a MultiDiscriminator for several (GMAN)
    opt_g: torch.optim.Optimizer  # the generator's parameters and the loss's (GMAN*'s θ)
    opt_d: torch.optim.Optimizer  # every discriminator's parameters

    @property
    def discriminators(self) -> list[nn.Module]:
        """The discriminators the loss sees: one, or each of a MultiDiscriminator's."""
        return discriminator_list(self.discriminator)


def build_nets(
    make_pair: Callable[[], tuple[nn.Module, nn.Module]],
    loss: GANLoss,
    *,
    seed: int,
    lr_g: float,
    lr_d: float,
    betas: tuple[float, float],
    device: torch.device,
    channels_last: bool = False,
) -> Nets:
    """`make_pair()` initialised from `seed` (the caller's random state is left as it was), on
    `device` (NHWC when channels_last), with the generator's EMA copy and an Adam optimiser per
    side. A loss with parameters
    is moved there too and learned by the generator's optimiser: GMAN*'s θ follows G."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g, d = make_pair()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g, d = g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    loss_params: list[nn.Parameter] = []
    if isinstance(loss, nn.Module):
        loss.to(device)
        loss_params = list(loss.parameters())
    opt_g = torch.optim.Adam([*g.parameters(), *loss_params], lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    return Nets(g, g_ema, d, opt_g, opt_d)


def member_nets(
    member: MemberConfig,
    train: TrainConfig,
    *,
    size: int,
    channels: int,
    loss: GANLoss,
    device: torch.device,
) -> Nets:
    """A pipeline member's networks and optimisers, from its params."""

    def make_pair() -> tuple[nn.Module, nn.Module]:
        return build_pair(
            member.arch,
            z_dim=train.z_dim,
            size=size,
            channels=channels,
            width=member.width,
            n_discriminators=member.discriminators,
        )

    return build_nets(
        make_pair,
        loss,
        seed=member.seed,
        lr_g=train.lr_g,
        lr_d=train.lr_d,
        betas=(train.beta1, train.beta2),
        device=device,
        channels_last=train.channels_last,
    )
