"""In which order the pool gets the members: the longest remaining work first.

A pool that starts short members first ends with one long member training alone on one core
(about 20 s of the default run). Submitting the longest first (LPT scheduling) keeps every
worker busy until the end. A member's work is its remaining steps times the floating-point
operations of one step, counted by torch's FlopCounterMode on one image.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ensgan.config import MemberConfig, Params, TrainConfig
from ensgan.gan.checkpoint import checkpoint_state
from ensgan.gan.member import fingerprint
from ensgan.gan.models import build_pair
from ensgan.io.cards import DataCard, read_card
from ensgan.layout import Layout


def step_flops(member: MemberConfig, train: TrainConfig, size: int, channels: int) -> int:
    """FLOPs of one training step: G once, D three times (real, fake for D, fake for G), each
    forward and backward (backward counted as twice the forward)."""
    g, d = build_pair(
        member.arch, z_dim=train.z_dim, size=size, channels=channels, width=member.width
    )
    g.eval(), d.eval()  # batch norm on one image
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fake = g(torch.zeros(1, train.z_dim))
        g_flops = counter.get_total_flops()
        d(fake)
        d_flops = counter.get_total_flops() - g_flops
    return 3 * (g_flops + 3 * d_flops) * train.batch_size


def remaining_steps(params: Params, layout: Layout, name: str, data_sha: str) -> int:
    """Steps left to train: all of them unless the checkpoint is this member's and not past."""
    state = checkpoint_state(layout.member(name))
    fp = fingerprint(data_sha, params.members[name], params.train)
    if state and state["fingerprint"] == fp and state["step"] <= params.train.steps:
        return params.train.steps - state["step"]
    return params.train.steps


def longest_first(params: Params, layout: Layout) -> list[str]:
    """Member names by remaining work, most first (ties keep params.yaml's order)."""
    data = read_card(DataCard, layout.prepared)
    _, channels, size, _ = data.shape
    work = {
        name: remaining_steps(params, layout, name, data.sha256)
        * step_flops(member, params.train, size, channels)
        for name, member in params.members.items()
    }
    return sorted(params.members, key=lambda n: -work[n])
