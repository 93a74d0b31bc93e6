"""Kernel inception distance (Bińkowski et al., ICLR 2018) in the evaluation feature space.

KID is the unbiased estimate of MMD² between real and generated features under the cubic
polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets of both sets, and
reported with its standard deviation over those subsets. Unlike FD's, its estimate has no
bias that depends on the count: about 0 (slightly negative is possible) when the two sets
come from one distribution, so figures measured on different counts compare.

This follows the authors' code (github.com/mbinkowski/MMD-GAN, gan/compute_scores.py,
`polynomial_mmd_averages` with `_mmd2_and_variance`'s default `mmd_est='unbiased'`): the same
kernel (degree 3, gamma 1/d, coef0 1), the same estimate, sum over i≠j of k(x_i, x_j) and of
k(y_i, y_j) over m(m−1) minus twice the sum of every k(x_i, y_j) over m², each subset drawn
afresh for each side without replacement, and the standard deviation as they print it (numpy's
`std`, over the subsets, ddof 0). The kernel and the estimate are torchmetrics'
(`torchmetrics.image.kid.poly_mmd`, adapted from that code); the subset loop is ours, as
torchmetrics' `KernelInceptionDistance.compute` neither takes a seed nor caps the subset.
Where it differs from the authors' code: the subset size is capped at the smaller set (as
clean-fid's `kernel_distance` does; the authors' code and torchmetrics raise instead), the
subsets come from a seeded generator (theirs from numpy's global state), the arithmetic is
in float64, and the per-subset variance estimate (`ret_var`) is not computed. clean-fid
reports the mean only. A side no larger than the subset is whole in every subset, so the
standard deviation is then the other side's sampling noise alone.
"""

from __future__ import annotations

import numpy as np
import torch

SUBSET_SIZE = 1000  # the paper's, torchmetrics' and clean-fid's defaults
SUBSETS = 100


def subset_indices(
    n_real: int, n_fake: int, *, subset_size: int, subsets: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real rows, generated rows) of each subset: min(subset_size, n_real, n_fake) distinct
    rows of each side, drawn afresh for every subset from one generator seeded by `seed`."""
    if subsets < 1:
        raise ValueError(f"KID needs at least one subset, got {subsets}")
    m = min(subset_size, n_real, n_fake)
    if m < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 rows of each feature set: subset_size "
            f"{subset_size}, {n_real} real and {n_fake} generated rows"
        )
    rng = np.random.default_rng(seed)
    return [
        (rng.choice(n_real, m, replace=False), rng.choice(n_fake, m, replace=False))
        for _ in range(subsets)
    ]


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subset_size: int = SUBSET_SIZE,
    subsets: int = SUBSETS,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial MMD² over `subsets` random subsets of
    min(subset_size, N_real, N_fake) rows of each (N, D) feature set (`subset_indices`)."""
    from torchmetrics.image.kid import poly_mmd  # torchmetrics' import is not cheap

    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1] or r.shape[1] == 0:
        raise ValueError(f"feature sets must be (N, D) with equal D > 0, got {r.shape}, {f.shape}")
    if not (np.isfinite(r).all() and np.isfinite(f).all()):
        raise ValueError("feature sets must be finite (a NaN or inf feature has no KID)")
    picks = subset_indices(len(r), len(f), subset_size=subset_size, subsets=subsets, seed=seed)
    rt, ft = torch.from_numpy(r), torch.from_numpy(f)
    scores = np.array(
        [float(poly_mmd(rt[torch.from_numpy(i)], ft[torch.from_numpy(j)])) for i, j in picks]
    )
    return float(scores.mean()), float(scores.std())
