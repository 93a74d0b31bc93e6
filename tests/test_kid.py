"""KID (ensgan/eval/kid.py): the authors' estimator over seeded subsets, unbiased, and clear
errors for what it cannot measure."""

from __future__ import annotations

import numpy as np
import pytest

from ensgan.eval.kid import kernel_distance, subset_indices


def _paper_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The test's oracle, Bińkowski et al. (2018) written out: with k(a, b) = (aᵀb/d + 1)³,
    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2 Σ_{i,j} k(x_i, y_j)/m²
    (their code's `_mmd2_and_variance`, mmd_est='unbiased')."""
    m, d = x.shape
    total = 0.0
    for a in (x, y):
        for i in range(m):
            for j in range(m):
                if i != j:
                    total += (a[i] @ a[j] / d + 1) ** 3 / (m * (m - 1))
    for i in range(m):
        for j in range(m):
            total -= 2 * (x[i] @ y[j] / d + 1) ** 3 / m**2
    return total


def test_kid_is_the_papers_estimate_over_its_subsets() -> None:
    """Mean and (ddof 0) standard deviation of the written-out estimate over the very subsets
    kernel_distance draws: each subset holds distinct rows, drawn afresh per side."""
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.3
    picks = subset_indices(40, 30, subset_size=12, subsets=6, seed=7)
    assert all(len(set(i)) == len(set(j)) == 12 for i, j in picks)
    assert len({tuple(i) for i, _ in picks}) == 6  # a new draw per subset
    oracle = [_paper_mmd2(real[i], fake[j]) for i, j in picks]
    mean, sd = kernel_distance(real, fake, subset_size=12, subsets=6, seed=7)
    assert mean == pytest.approx(np.mean(oracle), rel=1e-10)
    assert sd == pytest.approx(np.std(oracle), rel=1e-8) and sd > 0


def test_a_subset_larger_than_a_set_is_capped_at_it() -> None:
    """Capped at the smaller set (as clean-fid): then each subset holds every row of it, and
    with both sets that small every subset gives the same figure (sd 0), the one
    torchmetrics' KernelInceptionDistance gives on the same features."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 6)), rng.normal(size=(60, 6)) + 1.0
    mean, sd = kernel_distance(a, b, subset_size=1000, subsets=3)
    assert sd == pytest.approx(0.0, abs=1e-12) and mean > 0
    assert mean == pytest.approx(_paper_mmd2(a, b), rel=1e-10)
    with pytest.warns(UserWarning, match="save all extracted features"):
        tm = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=2, subset_size=60)
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    assert float(tm.compute()[0]) == pytest.approx(mean, rel=1e-9)
    capped = subset_indices(500, 60, subset_size=100, subsets=2, seed=0)
    assert [(len(i), len(j)) for i, j in capped] == [(60, 60)] * 2


def test_kid_of_two_draws_of_one_distribution_is_about_zero_and_can_be_negative() -> None:
    """Unbiased: over draws of one distribution the estimates straddle 0 (a biased estimate,
    like FD's, is positive every time), each within a few sds of it."""
    rng = np.random.default_rng(0)
    draws = [
        kernel_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)),
                        subset_size=100, subsets=20, seed=s)
        for s in range(8)
    ]  # fmt: skip
    kids = np.array([k for k, _ in draws])
    assert (kids < 0).any() and (kids > 0).any()
    assert all(abs(k) < 3 * sd and sd > 0 for k, sd in draws)


def test_kid_grows_with_a_shift_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))  # one distribution
    kids = [kernel_distance(a, b + s, subset_size=100, subsets=20)[0] for s in (0.0, 0.5, 2.0)]
    assert kids[0] < kids[1] < kids[2]
    mean, sd = kernel_distance(a, b + 0.5, subset_size=100, subsets=20)
    assert mean > 3 * sd > 0 and abs(kids[0]) < sd
    same = kernel_distance(a, b, subset_size=50, subsets=5, seed=3)
    assert same == kernel_distance(a, b, subset_size=50, subsets=5, seed=3)
    assert same != kernel_distance(a, b, subset_size=50, subsets=5, seed=4)


@pytest.mark.parametrize(
    ("real", "fake", "kwargs", "match"),
    [
        (np.zeros((10, 3)), np.zeros((10, 4)), {}, r"\(N, D\) with equal D"),
        (np.zeros(10), np.zeros(10), {}, r"\(N, D\)"),
        (np.zeros((10, 0)), np.zeros((10, 0)), {}, "D > 0"),
        (np.zeros((1, 3)), np.zeros((10, 3)), {}, "at least 2 rows"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subset_size": 1}, "at least 2 rows"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subsets": 0}, "at least one subset"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), {}, "finite"),
    ],
)
def test_kid_rejects_what_it_cannot_measure(
    real: np.ndarray, fake: np.ndarray, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        kernel_distance(real, fake, **kwargs)
