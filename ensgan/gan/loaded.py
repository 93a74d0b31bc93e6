"""A finished member, loaded to sample and score: the EMA generator and the discriminator.

Sampling never imports the training code: this module needs only the architectures, the
checkpoint's weights and the member's card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ensgan.errors import CardError, OutputError
from ensgan.gan.checkpoint import load_weights, weights_sha256
from ensgan.gan.models import build_pair, hidden_and_logit, to_uint8, to_unit
from ensgan.io.cards import MemberCard, read_card


@dataclass
class LoadedMember:
    name: str
    z_dim: int
    generator: nn.Module
    discriminator: nn.Module
    device: torch.device
    card: MemberCard | None = None  # None for members built in memory (tests, benchmarks)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Float images in [-1, 1] for latents z (N, z_dim), on the CPU."""
        out = [self.generator(zb.to(self.device)).cpu() for zb in z.split(batch_size)]
        x = torch.cat(out).contiguous() if out else torch.empty(0)
        if not torch.isfinite(x).all():
            raise OutputError(
                f"member {self.name} generated non-finite values (NaN or infinity): "
                "its weights are broken; train it again"
            )
        return x

    @torch.no_grad()
    def score(self, images_u8: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """The discriminator's logit for each uint8 image: higher means more real."""
        out = [
            self.discriminator(to_unit(b).to(self.device)).cpu()
            for b in images_u8.split(batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64) if out else np.empty(0)

    @torch.no_grad()
    def hidden_and_score(
        self, images_u8: torch.Tensor, batch_size: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """The discriminator's last hidden layer, (N, H) float32, and its logit, (N,) float64,
        for each uint8 image, from one pass."""
        hs, logits = [], []
        for b in images_u8.split(batch_size):
            h, logit = hidden_and_logit(self.discriminator, to_unit(b).to(self.device))
            hs.append(h.cpu())
            logits.append(logit.cpu())
        if not hs:
            return np.empty((0, 0), np.float32), np.empty(0)
        return torch.cat(hs).numpy(), torch.cat(logits).numpy().astype(np.float64)

    def generate_u8(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generate(z))


def load_member(member_dir: Path, device: str | torch.device = "cpu") -> LoadedMember:
    """The finished member in `member_dir` (FileNotFoundError if it has no card: not finished)."""
    card = read_card(MemberCard, member_dir)
    dev = torch.device(device)
    g, d = build_pair(
        card.arch,
        z_dim=card.z_dim,
        size=card.image_size,
        channels=card.channels,
        width=card.width,
        n_discriminators=card.discriminators,
    )
    fix = f"delete {member_dir} and train it again (`ensgan train {card.name}`)"
    try:
        load_weights(member_dir, g, d, dev)
    except Exception as exc:  # safetensors' errors share no base class but Exception
        raise CardError(
            f"member {card.name}: cannot load {member_dir / 'checkpoint'} "
            f"({type(exc).__name__}: {exc}); {fix}"
        ) from None
    if weights_sha256(g, d) != card.weights_sha256:
        raise CardError(
            f"member {card.name}: the weights in {member_dir / 'checkpoint'} are not the ones "
            f"its card.json describes (changed or corrupted since training); {fix}"
        )
    return LoadedMember(card.name, card.z_dim, g.to(dev).eval(), d.to(dev).eval(), dev, card)
