"""One registry per kind: every name resolves to its implementation, and unknown names list
the choices."""

from __future__ import annotations

import pytest
import torch

from ensgan.gan.models import build_pair
from ensgan.registry import ARCHS, COMBINATIONS, LOSSES, META_LEARNERS, SOURCES, Registry

REGISTRIES = [ARCHS, LOSSES, COMBINATIONS, META_LEARNERS, SOURCES]


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
        build_pair("biggan", z_dim=8, size=8, channels=1, width=4)
