"""Real-image samplers: bagging's bootstrap pools drawn uniformly, boosting's data weights drawn
by weight, both replayable from the generator's seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensgan.gan.samplers import UniformSampler, WeightedSampler, bootstrap_indices


def test_bootstrap_indices() -> None:
    n = 200
    a = bootstrap_indices(n, seed=1, bootstrap=True)
    b = bootstrap_indices(n, seed=2, bootstrap=True)
    assert a.shape == (n,) and a.min() >= 0 and a.max() < n
    assert len(np.unique(a)) < n  # drawn with replacement: repeats
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, bootstrap_indices(n, seed=1, bootstrap=True))
    for seed in (1, 2):
        np.testing.assert_array_equal(bootstrap_indices(n, seed, bootstrap=False), np.arange(n))


def test_uniform_sampler_draws_only_from_its_pool_and_replays_by_seed() -> None:
    pool = bootstrap_indices(100, seed=3, bootstrap=True)
    s = UniformSampler(pool)
    assert s.n_unique == len(np.unique(pool)) < 100
    draw = s.draw(torch.Generator().manual_seed(5), 500)
    assert draw.dtype == torch.int64 and set(draw.tolist()) <= set(pool.tolist())
    assert torch.equal(draw, s.draw(torch.Generator().manual_seed(5), 500))
    assert UniformSampler(np.arange(7)).n_unique == 7
    with pytest.raises(ValueError):
        UniformSampler(np.array([], dtype=np.int64))


def test_weighted_sampler_follows_its_weights() -> None:
    w = np.array([0.0, 1.0, 3.0, 0.0])
    s = WeightedSampler(w)
    assert s.n_unique == 2
    draw = s.draw(torch.Generator().manual_seed(0), 20_000).numpy()
    counts = np.bincount(draw, minlength=4)
    assert counts[0] == counts[3] == 0  # zero weight: never drawn
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.08)
    for bad in ([], [1.0, -1.0], [0.0, 0.0], [np.nan, 1.0], [[1.0]]):
        with pytest.raises(ValueError):
            WeightedSampler(np.array(bad))
