"""Generator/discriminator pairs: the architectures a member can have.

Every generator maps z (N, z_dim) to images in [-1, 1] shaped (N, C, S, S); every discriminator
maps such images to one logit each. Discriminators use spectral normalisation instead of batch
norm, so a member's score for one image does not depend on what else is in the batch: the
stacker and the vote score images one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ensgan.registry import ARCHS


def _n_up(size: int) -> int:
    return int(math.log2(size)) - 2  # 4x4 -> size


def weights_init(m: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """Transposed convolutions from 4x4 up to the image size (pytorch/examples dcgan)."""

    def __init__(self, z_dim: int, size: int, channels: int, width: int) -> None:
        super().__init__()
        ch = width * 2 ** _n_up(size)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(_n_up(size) - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Strided convolutions down to 4x4, then one 4x4 convolution to a logit."""

    def __init__(self, size: int, channels: int, width: int) -> None:
        super().__init__()
        ch = width
        layers: list[nn.Module] = [
            spectral_norm(nn.Conv2d(channels, ch, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
        ]
        for _ in range(_n_up(size) - 1):
            layers += [spectral_norm(nn.Conv2d(ch, ch * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [spectral_norm(nn.Conv2d(ch, 1, 4, 1, 0))]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


class UpsampleGenerator(nn.Module):
    """Nearest-neighbour upsampling + 3x3 convolutions: no checkerboard artefacts."""

    def __init__(self, z_dim: int, size: int, channels: int, width: int) -> None:
        super().__init__()
        ch = width * 2 ** _n_up(size)
        self.ch = ch
        self.fc = nn.Sequential(nn.Linear(z_dim, ch * 16, bias=False), nn.BatchNorm1d(ch * 16))
        layers: list[nn.Module] = [nn.ReLU(True)]
        for _ in range(_n_up(size)):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch, ch // 2, 3, 1, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.fc(z).view(len(z), self.ch, 4, 4))


class UpsampleDiscriminator(nn.Module):
    """3x3 convolutions and average pooling down to 4x4, then a linear logit."""

    def __init__(self, size: int, channels: int, width: int) -> None:
        super().__init__()
        ch = width
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(channels, ch, 3, 1, 1))]
        for _ in range(_n_up(size)):
            layers += [
                nn.LeakyReLU(0.2, True),
                nn.AvgPool2d(2),
                spectral_norm(nn.Conv2d(ch, ch * 2, 3, 1, 1)),
            ]
            ch *= 2
        layers += [nn.LeakyReLU(0.2, True), nn.Flatten(), spectral_norm(nn.Linear(ch * 16, 1))]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


class MLPGenerator(nn.Module):
    """Fully connected: no spatial prior at all, the most different member of the family."""

    def __init__(self, z_dim: int, size: int, channels: int, width: int) -> None:
        super().__init__()
        self.shape = (channels, size, size)
        hidden = width * 8
        self.main = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(True),
            nn.Linear(hidden, hidden * 2),
            nn.BatchNorm1d(hidden * 2),
            nn.ReLU(True),
            nn.Linear(hidden * 2, channels * size * size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z).view(len(z), *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, size: int, channels: int, width: int) -> None:
        super().__init__()
        hidden = width * 8
        self.main = nn.Sequential(
            nn.Flatten(),
            spectral_norm(nn.Linear(channels * size * size, hidden * 2)),
            nn.LeakyReLU(0.2, True),
            spectral_norm(nn.Linear(hidden * 2, hidden)),
            nn.LeakyReLU(0.2, True),
            spectral_norm(nn.Linear(hidden, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


# (generator, discriminator) per architecture, named in ensgan/registry.py ARCHS.
DCGAN = (DCGANGenerator, DCGANDiscriminator)
UPSAMPLE = (UpsampleGenerator, UpsampleDiscriminator)
MLP = (MLPGenerator, MLPDiscriminator)


class MultiDiscriminator(nn.Module):
    """Several discriminators of one architecture (GMAN), each initialised on its own. Training
    uses each one's logits (`members`); scoring a finished member uses their mean logit."""

    def __init__(self, discriminators: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(discriminators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([d(x) for d in self.members]).mean(0)


def discriminator_list(d: nn.Module) -> list[nn.Module]:
    """The discriminators the loss sees: one, or each of a MultiDiscriminator's."""
    return list(d.members) if isinstance(d, MultiDiscriminator) else [d]


def hidden_and_logit(d: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's last hidden layer, (N, H), and its logit, (N,), from one forward
    pass. The hidden layer is what the logit is a linear function of, and a richer view of
    "how real" than the logit alone (the stacker's `hidden` features). Every architecture
    here ends `main` with that linear layer (or 4x4 convolution); a MultiDiscriminator gives
    its discriminators' layers side by side and their mean logit, as its forward does."""
    if isinstance(d, MultiDiscriminator):
        parts = [hidden_and_logit(m, x) for m in d.members]
        return torch.cat([h for h, _ in parts], dim=1), torch.stack([o for _, o in parts]).mean(0)
    h = d.main[:-1](x)
    return h.flatten(1), d.main[-1](h).flatten()


@torch.no_grad()
def discriminator_outputs(
    d: nn.Module,
    samples: torch.Tensor,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    hidden: bool = False,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """(hidden layer (N, H) float32, logits (N,) float64) of `d` for stored samples, a batch
    at a time, each batch turned into network inputs by `to_input` only when it is scored (a
    whole set of float images would take gigabytes). Without `hidden`: an empty (N, 0)."""
    hs, logits = [], []
    for b in samples.split(batch_size):
        x = to_input(b).to(device)
        h, logit = hidden_and_logit(d, x) if hidden else (x.new_empty(len(x), 0), d(x))
        hs.append(h.cpu())
        logits.append(logit.cpu())
    if not logits:
        return np.empty((0, 0), np.float32), np.empty(0)
    return torch.cat(hs).numpy(), torch.cat(logits).numpy().astype(np.float64)


def build_pair(
    arch: str, *, z_dim: int, size: int, channels: int, width: int, n_discriminators: int = 1
) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (generator, discriminator) of the named architecture; with
    n_discriminators > 1 the discriminator is a MultiDiscriminator of that many."""
    g_cls, d_cls = ARCHS.load(arch)
    g = g_cls(z_dim, size, channels, width)
    ds = [d_cls(size, channels, width) for _ in range(n_discriminators)]
    if not getattr(g_cls, "own_init", False):  # the ResNet pair keeps its paper's
        g.apply(weights_init)
    return g, ds[0] if n_discriminators == 1 else MultiDiscriminator(ds)


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the generators produce."""
    return images_u8.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
