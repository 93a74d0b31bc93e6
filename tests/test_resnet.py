"""The SNGAN ResNet pair (ensgan/gan/resnet.py): the paper's configurations at 32 and 64 px,
its initialisation kept, spectral normalisation on every discriminator layer, and the
discriminator's last hidden layer what the stacker reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensgan.gan import resnet
from ensgan.gan.models import build_pair, hidden_and_logit


def _convs(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_size_maps_latents_to_images_and_images_to_logits(size: int, channels: int) -> None:
    g, d = build_pair("resnet", z_dim=16, size=size, channels=channels, width=4)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    h, logit = hidden_and_logit(d.eval(), x)
    torch.testing.assert_close(logit, d(x))  # the logit is the last layer over the hidden one
    assert h.shape[0] == 3 and logit.shape == (3,)


def test_the_widths_are_the_papers_at_the_default_width() -> None:
    """SNGAN's CIFAR (32 px) and STL/64 px configurations at width 32 (Mimicry's defaults:
    ngf 256 / ndf 128 at 32 px, ngf = ndf = 1024 at 64 px)."""
    g32, d32 = build_pair("resnet", z_dim=128, size=32, channels=3, width=32)
    assert [b.c1.out_channels for b in g32.main if isinstance(b, resnet.GBlock)] == [256] * 3
    assert g32.l1.out_features == 16 * 256
    blocks = [b for b in d32.main if isinstance(b, resnet.DBlock | resnet.DBlockOptimized)]
    assert [b.c2.out_channels for b in blocks] == [128] * 4
    assert [getattr(b, "down", True) for b in blocks] == [True, True, False, False]
    g64, d64 = build_pair("resnet", z_dim=128, size=64, channels=3, width=32)
    ups = [b for b in g64.main if isinstance(b, resnet.GBlock)]
    assert [(b.c1.in_channels, b.c2.out_channels) for b in ups] == [
        (1024, 512), (512, 256), (256, 128), (128, 64),
    ]  # fmt: skip
    downs = [b for b in d64.main if isinstance(b, resnet.DBlock | resnet.DBlockOptimized)]
    assert [b.c2.out_channels for b in downs] == [64, 128, 256, 512, 1024]
    assert d64.main[-1].in_features == 1024


def test_the_discriminator_is_spectrally_normalised_and_the_generator_keeps_its_init() -> None:
    g, d = build_pair("resnet", z_dim=32, size=32, channels=1, width=8)
    assert all(hasattr(m, "parametrizations") for m in _convs(d))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())  # scores image by image
    torch.manual_seed(0)
    fresh = resnet.ResNetGenerator(32, 32, 1, 8)
    torch.manual_seed(0)
    g2, _ = build_pair("resnet", z_dim=32, size=32, channels=1, width=8)
    for a, b in zip(fresh.state_dict().values(), g2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # no DCGAN re-initialisation by build_pair
    first = g.main[0].c1.weight  # Xavier-uniform with gain √2: bound √2·√(6/(fan_in+fan_out))
    fan = first.shape[1] * 9 + first.shape[0] * 9
    assert first.abs().max() <= 2**0.5 * (6 / fan) ** 0.5 + 1e-6
    assert first.std() > 0.05  # not DCGAN's N(0, 0.02)


def test_the_residual_shortcut_reads_the_blocks_input_unchanged() -> None:
    """The discriminator block's ReLU is not in place: its shortcut sees the input itself."""
    block = resnet.DBlock(4, 4, down=False)
    x = torch.randn(2, 4, 8, 8)
    before = x.clone()
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(x, before)
        residual = block.c2(torch.relu(block.c1(torch.relu(x))))
    torch.testing.assert_close(out, residual + x)
