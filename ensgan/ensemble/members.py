"""What the combinations, the stacker and boosting need of a member, and nothing more.

A pipeline member loaded from its checkpoint (ensgan.gan.loaded.LoadedMember) and a GAN the
benchmark trains in memory on 2-D points or stacked digits (ensgan.bench.methods.TrainedGAN)
both have this shape, so `ensgan bench modes` runs exactly the sampling code that `ensgan
generate` and `ensgan evaluate` run. Samples are arrays in the member's stored format: uint8
(N, C, H, W) images, or float32 (N, 2) points.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Member(Protocol):
    name: str
    z_dim: int

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """The generator's raw output for latents z (N, z_dim), on the CPU."""
        ...

    def to_samples(self, x: torch.Tensor) -> np.ndarray:
        """Raw outputs (`generate`'s, or a pixel mean of them) in the stored format."""
        ...

    def logits(self, samples: np.ndarray) -> np.ndarray:
        """(N,) float64: its discriminator's logit per sample (the mean over several)."""
        ...

    def hidden_and_logits(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H) float32 last hidden layer(s) and (N,) float64 logits, from one pass."""
        ...


def latents(seeds: np.ndarray, z_dim: int) -> torch.Tensor:
    """One standard-normal latent per seed, the same on every machine."""
    out = torch.empty(len(seeds), z_dim)
    for i, s in enumerate(seeds):
        out[i] = torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s)))
    return out


def member_sample(member: Member, seeds: np.ndarray) -> np.ndarray:
    """One sample per latent seed, in the member's stored format: any sample can be made
    again from its member and seed."""
    return member.to_samples(member.generate(latents(seeds, member.z_dim)))
