"""The SNGAN ResNet generator and discriminator (Miyato et al., ICLR 2018), for 32 and 64 px.

Read from Mimicry's implementation (kwotsin/mimicry, torch_mimicry/nets/sngan/sngan_32.py and
sngan_64.py, nets/modules/resblocks.py), which follows the official Chainer code
(pfnet-research/sngan_projection):

- generator: a linear layer to 4x4 maps, one residual up-block per doubling (batch norm,
  ReLU, 2x upsampling, 3x3 convolution, twice; a 1x1 convolution of the upsampled input as the
  shortcut), then batch norm, ReLU, a 3x3 convolution and tanh;
- discriminator: the "optimised" first block (convolutions, then 2x average pooling, the
  shortcut pooled first), residual blocks (ReLU, 3x3 convolution, twice; a 1x1 shortcut when
  the size or width changes), then ReLU, a global sum pool and a linear logit, every layer
  spectrally normalised.

Up to 32 px the CIFAR configuration: every block as wide (the generator `8 * width` channels,
256 at the default width 32; the discriminator `4 * width`, 128), the discriminator pooling in
its first two blocks only. From 64 px the STL/ImageNet-64 configuration: widths halve towards
the image (the generator from `32 * width`, 1,024, down; the discriminator up to it) and every
discriminator block pools. Initialisation as theirs: Xavier-uniform, gain √2 in the residual
convolutions and 1 elsewhere. Where this differs from Mimicry: the discriminator's residual
ReLU is not in place (Mimicry's `nn.ReLU(True)` also rewrites the input its shortcut then
reads; the Chainer code applies the shortcut to the block's input), and spectral
normalisation is PyTorch's own (one power iteration, as theirs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

WIDE_FROM = 64  # the size from which widths halve towards the image (SNGAN-64)


def _xavier(layer: nn.Conv2d | nn.Linear, gain: float) -> nn.Conv2d | nn.Linear:
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(cin: int, cout: int, k: int, gain: float, sn: bool) -> nn.Module:
    conv = _xavier(nn.Conv2d(cin, cout, k, 1, k // 2), gain)
    return spectral_norm(conv) if sn else conv


class GBlock(nn.Module):
    """Generator residual block with 2x (bilinear, as Mimicry) upsampling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.c1 = _conv(cin, cout, 3, math.sqrt(2.0), sn=False)
        self.c2 = _conv(cout, cout, 3, math.sqrt(2.0), sn=False)
        self.c_sc = _conv(cin, cout, 1, 1.0, sn=False)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.c_sc(self._up(x))


class DBlock(nn.Module):
    """Discriminator residual block, pooling 2x when `down`."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.c1 = _conv(cin, cin, 3, math.sqrt(2.0), sn=True)
        self.c2 = _conv(cin, cout, 3, math.sqrt(2.0), sn=True)
        self.c_sc = _conv(cin, cout, 1, 1.0, sn=True) if cin != cout or down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        sc = x if self.c_sc is None else self.c_sc(x)
        if self.down:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)
        return h + sc


class DBlockOptimized(nn.Module):
    """The first discriminator block: on the image itself, always pooling 2x."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1 = _conv(cin, cout, 3, math.sqrt(2.0), sn=True)
        self.c2 = _conv(cout, cout, 3, math.sqrt(2.0), sn=True)
        self.c_sc = _conv(cin, cout, 1, 1.0, sn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class SumPool(nn.Module):
    """Global sum pooling: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3))


def _widths(size: int, base: int) -> list[int]:
    """Channels after each of the n doublings from 4x4: constant up to 32 px, else halving
    from `base` (widths[0] is the 4x4 maps', widths[-1] the last block's)."""
    n = int(math.log2(size)) - 2
    if size < WIDE_FROM:
        return [base] * (n + 1)
    return [max(base >> i, 1) for i in range(n + 1)]


class ResNetGenerator(nn.Module):
    own_init = True  # build_pair keeps this initialisation (no DCGAN re-initialisation)

    def __init__(self, z_dim: int, size: int, channels: int, width: int) -> None:
        super().__init__()
        ch = _widths(size, width * (8 if size < WIDE_FROM else 32))
        self.ch = ch[0]
        self.l1 = _xavier(nn.Linear(z_dim, 16 * ch[0]), 1.0)
        blocks = [GBlock(a, b) for a, b in zip(ch, ch[1:], strict=False)]
        out = _xavier(nn.Conv2d(ch[-1], channels, 3, 1, 1), 1.0)
        self.main = nn.Sequential(*blocks, nn.BatchNorm2d(ch[-1]), nn.ReLU(), out, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.l1(z).view(len(z), self.ch, 4, 4))


class ResNetDiscriminator(nn.Module):
    def __init__(self, size: int, channels: int, width: int) -> None:
        super().__init__()
        wide = size >= WIDE_FROM
        ch = _widths(size, width * (32 if wide else 4))[::-1]  # narrow at the image
        blocks: list[nn.Module] = [DBlockOptimized(channels, ch[0])]
        if wide:  # SNGAN-64: every block pools, down to 2x2
            blocks += [DBlock(a, b, down=True) for a, b in zip(ch, ch[1:], strict=False)]
        else:  # CIFAR: one more pooling block, then two at that size
            blocks += [DBlock(ch[0], ch[0], down=size > 8), DBlock(ch[0], ch[0], False)]
            blocks += [DBlock(ch[0], ch[0], down=False)]
        linear = spectral_norm(_xavier(nn.Linear(ch[-1], 1), 1.0))
        self.main = nn.Sequential(*blocks, nn.ReLU(), SumPool(), linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


RESNET = (ResNetGenerator, ResNetDiscriminator)
