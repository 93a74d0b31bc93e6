"""One registry per kind: every name resolves to its implementation, and unknown names list
the choices. Members are scheduled longest first."""

from __future__ import annotations

import pytest
import torch

from ensgan.config import parse_params
from ensgan.data.prepared import prepare
from ensgan.gan.member import train_member
from ensgan.gan.models import build_pair
from ensgan.layout import Layout
from ensgan.orchestration.schedule import longest_first, remaining_steps, step_flops
from ensgan.registry import ARCHS, COMBINATIONS, LOSSES, META_LEARNERS, Registry

REGISTRIES = [ARCHS, LOSSES, COMBINATIONS, META_LEARNERS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_registered_name_resolves(registry: Registry) -> None:
    assert len(registry) >= 1
    for name in registry:
        assert registry.load(name) is not None, name
    with pytest.raises(ValueError, match="choose from") as info:
        registry.check("no-such-thing")
    assert all(name in str(info.value) for name in registry)


def test_architectures_come_from_the_registry() -> None:
    for arch in ARCHS:
        g, d = build_pair(arch, z_dim=8, size=8, channels=1, width=4)
        assert (type(g), type(d)) == ARCHS.load(arch)
        assert d(g(torch.randn(2, 8))).shape == (2,)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_pair("resnet", z_dim=8, size=8, channels=1, width=4)


def _params(steps: int = 6):
    members = {
        "small": {"arch": "dcgan", "width": 4, "seed": 1},
        "mlp": {"arch": "mlp", "width": 4, "seed": 2},
        "big": {"arch": "dcgan", "width": 16, "seed": 3},
    }
    train = {"steps": steps, "batch_size": 8, "z_dim": 8, "checkpoint_every": 3, "device": "cpu"}
    return parse_params({"data": {"image_size": 8}, "members": members, "train": train})


def test_longest_first_orders_by_remaining_work(tmp_path) -> None:
    p, layout = _params(), Layout(tmp_path)
    data = prepare(p.data, layout.prepared)
    flops = {n: step_flops(m, p.train, 8, 1) for n, m in p.members.items()}
    assert flops["big"] > flops["small"]
    order = longest_first(p, layout)
    assert order == sorted(p.members, key=lambda n: -flops[n])
    assert order[0] == "big"
    # A finished member has nothing left to do: it goes last, whatever its size.
    train_member("big", p.members["big"], p.train, layout.prepared, layout.member("big"))
    assert remaining_steps(p, layout, "big", data.sha256) == 0
    assert longest_first(p, layout)[-1] == "big"
    # Raising the steps gives it the difference to do, not all of them.
    more = _params(steps=9)
    assert remaining_steps(more, layout, "big", data.sha256) == 3
