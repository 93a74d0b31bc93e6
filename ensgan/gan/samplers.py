"""Which real images a training step draws: the seam for bagging and boosting.

A sampler turns (step generator, batch size) into indices into the training split. Drawing
from the step's own seeded generator keeps resume exact: step t draws the same images whether
or not the run was interrupted before it. Bagging is a uniform draw from a bootstrap resample;
per-image weights (boosting reweights the data each round) draw in proportion to them.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np
import torch


class RealSampler(Protocol):
    n_unique: int  # how many distinct training images the sampler can ever draw
    identity: str  # a hash of what it draws from: part of a member's fingerprint

    def draw(self, gen: torch.Generator, batch_size: int) -> torch.Tensor:
        """int64 indices into the training split, one per image of the batch."""
        ...


class UniformSampler:
    """Uniform draws, with replacement, from `pool` (every index, or a bootstrap resample)."""

    def __init__(self, pool: np.ndarray) -> None:
        if len(pool) == 0:
            raise ValueError("a sampler needs at least one image to draw from")
        self.pool = torch.as_tensor(pool, dtype=torch.int64)
        self.n_unique = int(torch.unique(self.pool).numel())
        self.identity = "uniform-" + _digest(self.pool.numpy())

    def draw(self, gen: torch.Generator, batch_size: int) -> torch.Tensor:
        return self.pool[torch.randint(len(self.pool), (batch_size,), generator=gen)]


class WeightedSampler:
    """Draws image i with probability weights[i] / sum(weights), with replacement."""

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be a non-empty 1-D array of finite values >= 0")
        if w.sum() <= 0:
            raise ValueError("weights must not all be zero")
        self.weights = torch.as_tensor(w / w.sum())
        self.n_unique = int((w > 0).sum())
        self.identity = "weighted-" + _digest(self.weights.numpy())

    def draw(self, gen: torch.Generator, batch_size: int) -> torch.Tensor:
        return torch.multinomial(self.weights, batch_size, replacement=True, generator=gen)


def bootstrap_indices(n: int, seed: int, bootstrap: bool) -> np.ndarray:
    """Bagging: a resample of n indices drawn with replacement (all of them when off)."""
    if not bootstrap:
        return np.arange(n)
    return np.random.default_rng(seed).integers(0, n, size=n)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
