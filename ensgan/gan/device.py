"""Where members train and sample: CPU by default, CUDA when present and asked for."""

from __future__ import annotations

import torch

from ensgan.errors import ConfigError


def resolve_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def configure(device: torch.device, benchmark: bool = False) -> torch.device:
    """On CUDA: TF32 matmuls and convolutions (fp32's range, a 10-bit mantissa: what Ampere
    and later GPUs run fp32 at), and cuDNN's autotuner when asked (it may pick another
    algorithm after a resume, so a resumed run is then no longer bit-exact). `device` back."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = benchmark
    return device
