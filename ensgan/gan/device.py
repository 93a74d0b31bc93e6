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
