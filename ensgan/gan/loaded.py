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
from ensgan.gan.models import build_pair, discriminator_outputs, to_uint8, to_unit
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

    def score(self, images_u8: torch.Tensor) -> np.ndarray:
        """The discriminator's logit for each uint8 image: higher means more real."""
        return discriminator_outputs(self.discriminator, images_u8, to_unit, self.device)[1]

    def hidden_and_score(self, images_u8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The discriminator's last hidden layer, (N, H) float32, and its logit, (N,) float64,
        for each uint8 image, from one pass."""
        return discriminator_outputs(
            self.discriminator, images_u8, to_unit, self.device, hidden=True
        )

    def generate_u8(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generate(z))

    # ensgan.ensemble.members.Member: samples are uint8 image arrays.

    def to_samples(self, x: torch.Tensor) -> np.ndarray:
        return to_uint8(x).numpy()

    def logits(self, samples: np.ndarray) -> np.ndarray:
        return self.score(torch.from_numpy(samples))

    def hidden_and_logits(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.hidden_and_score(torch.from_numpy(samples))


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
