"""The 2-D mixtures of PacGAN's Table 1 and the networks their code trains on them.

Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative adversarial
networks", NeurIPS 2018, section 5.1; official code github.com/fjxmlzn/PacGAN,
synthetic_data_experiments/2DRing_GAN&PacGAN/ and 2DGrid_GAN&PacGAN/ (config.py: centres,
variances, widths, Adam settings; pacgan_task.py: the bricks below, written in Theano/Blocks).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ensgan.gan.models import MultiDiscriminator


@dataclass(frozen=True)
class Mixture:
    """Equal-weight isotropic Gaussians: `centres` (M, 2) and one `std` for all of them."""

    name: str
    centres: np.ndarray
    std: float

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points, float32 (n, 2): a centre drawn uniformly, plus N(0, std^2 I)."""
        which = rng.integers(len(self.centres), size=n)
        return (self.centres[which] + self.std * rng.standard_normal((n, 2))).astype(np.float32)


def ring() -> Mixture:
    """8 Gaussians evenly on the unit circle, std 0.01 (config.py: cos/sin(2 pi i / 8))."""
    angles = 2 * math.pi * np.arange(8) / 8
    return Mixture("ring", np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.01)


def grid() -> Mixture:
    """25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05 (config.py: product(range(-4, 5, 2)))."""
    pts = list(itertools.product(range(-4, 5, 2), repeat=2))
    return Mixture("grid", np.array(pts, dtype=np.float64), 0.05)


# The networks. Blocks' BatchNormalization keeps population statistics as m * 0.05 + p * 0.95
# (pacgan_task.py `bn_updates`) with epsilon 1e-4; every weight starts N(0, 0.02), every bias 0.
BN_MOMENTUM = 0.05
BN_EPS = 1e-4
INIT_STD = 0.02


class ToyGenerator(nn.Module):
    """z (N, z_dim) -> (N, 2): `depth` x [linear without bias, batch norm, ReLU], then a
    linear output with bias and no squashing (Blocks MLP `decoder`, use_bias=False but last)."""

    def __init__(self, z_dim: int = 2, hidden: int = 400, depth: int = 4, out: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = z_dim
        for _ in range(depth):
            layers += [
                nn.Linear(width, hidden, bias=False),
                nn.BatchNorm1d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.ReLU(),
            ]
            width = hidden
        layers.append(nn.Linear(width, out))
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Maxout(nn.Module):
    """Blocks' LinearMaxout: a linear map to units x pieces, then the max over the pieces."""

    def __init__(self, d_in: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(d_in, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(len(x), self.units, self.pieces).amax(dim=2)


class MaxoutDiscriminator(nn.Module):
    """(N, 2) -> one logit each: `depth` maxout layers of `units` x `pieces`, then a linear
    logit. No dropout and no batch norm (pacgan_task.py builds it `with_dropout=False`)."""

    def __init__(self, d_in: int = 2, units: int = 200, pieces: int = 5, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(depth):
            layers.append(Maxout(width, units, pieces))
            width = units
        layers.append(nn.Linear(width, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


def init_weights(m: nn.Module) -> None:
    """Blocks IsotropicGaussian(0.02) weights and Constant(0) biases; batch norm 1 and 0."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, INIT_STD)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm1d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_toy_pair(z_dim: int = 2, n_discriminators: int = 1) -> tuple[nn.Module, nn.Module]:
    """A fresh generator and discriminator; with n_discriminators > 1 the discriminator is a
    MultiDiscriminator of that many (GMAN), as the package's own pairs are."""
    g = ToyGenerator(z_dim)
    ds = [MaxoutDiscriminator() for _ in range(n_discriminators)]
    for m in (g, *ds):
        m.apply(init_weights)
    return g, ds[0] if n_discriminators == 1 else MultiDiscriminator(ds)
