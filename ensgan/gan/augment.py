"""Differentiable augmentation of what the discriminator sees (DiffAugment, Zhao et al.,
NeurIPS 2020), for members that see little data (a bootstrap, a cluster).

From the authors' code (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py): `color`
(brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5], each per image), `translation`
(by up to 1/8 of the size each way, zero-padded) and `cutout` (a zeroed square of half the
size at a random centre). The same policies are applied to real and generated images, in the
discriminator's step and the generator's, and every operation is differentiable, so the
generator learns the un-augmented distribution. One difference: the draws come from the
training step's own generator, not torch's global one, so a resumed member draws exactly the
augmentations an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Aug = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _rand(n: int, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """n per-image uniforms in [0, 1), shaped to broadcast over (N, C, H, W)."""
    return torch.rand(n, 1, 1, 1, generator=gen).to(device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + (_rand(len(x), x, gen) - 0.5)


def saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(len(x), x, gen) * 2) + mean


def contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(len(x), x, gen) + 0.5) + mean


def _grid(x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, ...]:
    n, dev = len(x), x.device
    return torch.meshgrid(
        torch.arange(n, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev),
        indexing="ij",
    )  # fmt: skip


def translation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    sx, sy = h // 8, w // 8
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen).to(x.device)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen).to(x.device)
    b, gx, gy = _grid(x, h, w)
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1)[b, gx, gy].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = h // 2, w // 2
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    b, gx, gy = _grid(x, ch, cw)
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES: dict[str, tuple[Aug, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(x: torch.Tensor, policies: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """`x` (N, C, H, W) through each named policy in order (none: unchanged)."""
    for name in policies:
        for op in POLICIES[name]:
            x = op(x, gen)
    return x
