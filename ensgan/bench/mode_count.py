"""Mode-collapse measures of PacGAN's Tables 1 and 2, as their official code computes them.

2-D mixtures (synthetic_data_experiments/PacGAN/pacgan/extensions.py, `MetricLogger`): each
sample goes to its nearest centre by the distance sqrt(sum(d^2 / variance)) (Euclidean over std
for these isotropic mixtures); it is high quality when that distance is below 3; the coverage
histogram counts high-quality samples only; a mode is covered when it has at least one. The
code logs the histogram's entropy (`scipy.stats.entropy`, natural log) and the table's reverse
KL is KL(histogram || uniform) = log(M) - entropy, with 0 log 0 = 0 and no epsilon.

Stacked digits (stacked_MNIST_experiments/VEEGAN_experiment/model.py, `log_metrics`): every
sample's three channels are read by a digit classifier into one of 1,000 triples; modes are the
triples seen at least once; KL(histogram over all samples || uniform over 1,000), 0 log 0 = 0.
"""

from __future__ import annotations

import numpy as np

HQ_STDS = 3.0  # `dis_thre` in MetricLogger


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(counts / sum || uniform over len(counts)), natural log; NaN when every count is 0."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(np.sum(p * np.log(p * len(counts))))


def nearest_centres(points: np.ndarray, centres: np.ndarray, std: float):
    """(index of the nearest centre, its distance in stds) for each point."""
    pts = np.asarray(points, dtype=np.float64)
    d2 = ((pts[:, None, :] - np.asarray(centres, dtype=np.float64)[None]) ** 2).sum(-1)
    idx = d2.argmin(axis=1)
    return idx, np.sqrt(d2[np.arange(len(pts)), idx]) / std


def mixture_modes(points: np.ndarray, centres: np.ndarray, std: float) -> dict[str, float]:
    """`modes` covered (of len(centres)), `hq` (% high-quality samples), `kl` (reverse KL of
    the high-quality histogram to uniform; NaN when no sample is high quality)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != np.shape(centres)[1] or len(points) == 0:
        raise ValueError(f"points must be (N, {np.shape(centres)[1]}), got {points.shape}")
    finite = np.isfinite(points).all(axis=1)
    idx, dist = nearest_centres(np.where(finite[:, None], points, 0.0), centres, std)
    hq = finite & (dist < HQ_STDS)
    counts = np.bincount(idx[hq], minlength=len(centres))
    return {
        "modes": float((counts > 0).sum()),
        "hq": 100.0 * float(hq.mean()),
        "kl": kl_to_uniform(counts),
    }


def triple_modes(digits: np.ndarray, n_classes: int = 10) -> dict[str, float]:
    """`modes` (distinct digit triples seen) and `kl` (to uniform over n_classes^3), from the
    classifier's (N, 3) digit readings."""
    digits = np.asarray(digits)
    if digits.ndim != 2 or digits.shape[1] != 3:
        raise ValueError(f"digits must be (N, 3), got {digits.shape}")
    code = (digits[:, 0] * n_classes + digits[:, 1]) * n_classes + digits[:, 2]
    counts = np.bincount(code, minlength=n_classes**3)
    return {"modes": float((counts > 0).sum()), "kl": kl_to_uniform(counts)}
