"""Precision, recall, density and coverage: fidelity and diversity measured apart.

FD folds both into one number, so a selection that keeps only typical images looks merely
"worse"; these four say which way it went. Improved precision/recall (Kynkäänniemi et al.
2019) and density/coverage (Naeem et al. 2020) on k-nearest-neighbour balls, computed with
the authors' `prdc` package (its k-NN radius rule `get_kth_value`, on the scikit-learn
Euclidean distances its `compute_pairwise_distance` takes, asked for without the pool of 8
threads it starts per call, which costs far more than the arithmetic on sets this small; its
`compute_prdc` prints, so the four formulas are applied here to the same arrays). The real
set's radii are computed once for all the generated sets it is compared with. Coverage is
also reported per class: the share of each class's real images whose ball holds a fake, so a
dropped mode shows as a class near 0.
"""

from __future__ import annotations

import numpy as np
from prdc.prdc import get_kth_value
from sklearn.metrics.pairwise import euclidean_distances

NEAREST_K = 5


def equal_counts(
    real: np.ndarray,
    fake: np.ndarray,
    real_labels: np.ndarray | None = None,
    seed: int = 0,
    max_real: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """min(N_real, N_fake, max_real) rows of each, a seeded random subset (data can be sorted
    by class, so the first rows would be biased): these measures shift with the ratio of
    sample counts, so every row of a report is measured at the same counts, on the same real
    subset. `max_real` bounds the k-NN matrices, which grow with the square of the count."""
    n = min(len(real), len(fake), len(real) if max_real is None else max_real)
    rng = np.random.default_rng(seed)
    keep_real = np.sort(rng.choice(len(real), n, replace=False))
    keep_fake = np.sort(rng.choice(len(fake), n, replace=False))
    labels = None if real_labels is None else real_labels[keep_real]
    return real[keep_real], fake[keep_fake], labels


def equal_count_sets(
    real: np.ndarray,
    fake: np.ndarray,
    real_labels: np.ndarray | None = None,
    seed: int = 0,
    max_real: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """The real subset of `equal_counts`, and every generated image used: the fakes cut into
    as many disjoint sets of that size as they fill (at least one). Averaging the measures
    over the sets keeps the equal counts but uses N_fake images rather than N_real, which
    matters when the real reference is small (docs/results.md measures how much)."""
    real_n, _, labels = equal_counts(real, fake, real_labels, seed, max_real)
    n = len(real_n)
    order = np.random.default_rng(seed + 1).permutation(len(fake))
    sets = [fake[np.sort(order[i * n : (i + 1) * n])] for i in range(max(len(fake) // n, 1))]
    return real_n, sets, labels


def prdc_mean(
    real: np.ndarray,
    fakes: list[np.ndarray],
    *,
    k: int = NEAREST_K,
    real_labels: np.ndarray | None = None,
    n_classes: int = 0,
) -> dict[str, float | list[float | None]]:
    """`prdc` against each of several fake sets, averaged (per class too)."""
    if not fakes:
        raise ValueError("no generated feature sets to measure")
    radii = nearest_neighbour_radii(np.asarray(real, np.float32), k)
    each = [
        prdc(real, f, k=k, real_labels=real_labels, n_classes=n_classes, real_radii=radii)
        for f in fakes
    ]
    out: dict[str, float | list[float | None]] = {
        key: float(np.mean([e[key] for e in each]))
        for key in ("precision", "recall", "density", "coverage")
    }
    if real_labels is not None:
        columns = zip(*(e["coverage_per_class"] for e in each), strict=True)
        out["coverage_per_class"] = [
            None if col[0] is None else round(float(np.mean(col)), 6) for col in columns
        ]
    return out


def prdc(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    k: int = NEAREST_K,
    real_labels: np.ndarray | None = None,
    n_classes: int = 0,
    real_radii: np.ndarray | None = None,
) -> dict[str, float | list[float | None]]:
    """The four measures of (N, D) fake features against (M, D) real ones, with k neighbours.

    With `real_labels`, adds `coverage_per_class` (n_classes values; None for a class with no
    real image). `real_radii`: the real set's `nearest_neighbour_radii`, when known."""
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"feature sets must be (N, D) with equal D, got {real.shape}, {fake.shape}"
        )
    if min(len(real), len(fake)) <= k:
        raise ValueError(
            f"need more than k={k} real and fake samples, got {len(real)}, {len(fake)}"
        )
    if real_radii is None:
        real_radii = nearest_neighbour_radii(real, k)  # (M,) k-NN radius of each real
    fake_radii = nearest_neighbour_radii(fake, k)  # (N,)
    dist = euclidean_distances(real, fake)  # (M, N)
    in_real_ball = dist < real_radii[:, None]  # fake j inside real i's ball
    covered = dist.min(axis=1) < real_radii  # real i's ball holds some fake
    out: dict[str, float | list[float | None]] = {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float((dist < fake_radii[None, :]).any(axis=1).mean()),
        "density": float(in_real_ball.sum(axis=0).mean() / k),
        "coverage": float(covered.mean()),
    }
    if real_labels is not None:
        labels = np.asarray(real_labels).ravel()[: len(real)]
        out["coverage_per_class"] = [
            round(float(covered[labels == c].mean()), 6) if (labels == c).any() else None
            for c in range(n_classes)
        ]
    return out


def nearest_neighbour_radii(x: np.ndarray, k: int = NEAREST_K) -> np.ndarray:
    """Each row's distance to its k-th nearest other row (prdc's
    `compute_nearest_neighbour_distances`: the (k+1)-th smallest, the row itself being 0)."""
    return get_kth_value(euclidean_distances(x, x), k=k + 1, axis=-1)
