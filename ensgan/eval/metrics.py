"""Measures for generated images: the Fréchet distance, the kernel inception distance
(ensgan/eval/kid.py), precision, recall, density and coverage (ensgan/eval/prdc.py), class
coverage and KL.

The feature figures are computed in the evaluation feature space (`evaluate.feature_space`):
the project's own feature net (ensgan/eval/features.py), whose numbers are comparable only
between runs that share that net (same data, steps and seed), or the FID Inception-v3
(ensgan/eval/inception.py), whose FD is the FID. Classes always come from the feature net.
"""

from __future__ import annotations

import math

import numpy as np

from ensgan.eval.features import FeatureNet, features_and_classes
from ensgan.eval.kid import SUBSET_SIZE, SUBSETS, kernel_distance
from ensgan.eval.prdc import equal_count_sets, prdc_mean


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (as pytorch-fid).

    ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr(sqrt(S_a S_b)). The last trace is the sum of
    the singular values of F_a F_bᵀ for any factors S = FᵀF (the eigenvalues of S_a S_b are
    those of F_a S_b F_aᵀ), so no square root of a D x D product is taken: the factor is the
    centred features / sqrt(N - 1) when N <= D (exact though S is singular, as it is for fewer
    images than Inception's 2,048 features), S's symmetric square root otherwise.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 rows to fit a covariance")
    f_a, f_b = _cov_factor(a), _cov_factor(b)
    tr_sqrt = np.linalg.svd(f_a @ f_b.T, compute_uv=False).sum()
    diff = a.mean(0) - b.mean(0)
    fd = diff @ diff + (f_a**2).sum() + (f_b**2).sum() - 2.0 * tr_sqrt
    return max(float(fd), 0.0)  # tiny negatives are rounding noise


def _cov_factor(x: np.ndarray) -> np.ndarray:
    """F with FᵀF = the sample covariance of x's rows, with min(N, D) rows."""
    n, d = x.shape
    centred = (x - x.mean(0)) / np.sqrt(n - 1)
    if n <= d:
        return centred
    w, v = np.linalg.eigh(centred.T @ centred)
    return (v * np.sqrt(np.clip(w, 0.0, None))).T


def class_histogram(pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of predictions in each class, (n_classes,) float64 summing to 1 (0s if empty)."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if len(pred) and (pred.min() < 0 or pred.max() >= n_classes):
        raise ValueError(f"class ids must lie in [0, {n_classes})")
    counts = np.bincount(pred, minlength=n_classes).astype(np.float64)
    return counts / max(len(pred), 1)


def class_coverage(pred: np.ndarray, n_classes: int, min_fraction: float = 0.01) -> int:
    """Number of classes that appear in at least `min_fraction` of the samples (and >= 1).

    A floor of 1% rather than "any sample" so that a few stray images the feature net happens
    to put in a class do not count as covering that mode; min_fraction=0 means any sample.
    """
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if not len(pred):
        return 0
    counts = np.rint(class_histogram(pred, n_classes) * len(pred))
    need = max(1, math.ceil(min_fraction * len(pred) - 1e-9))
    return int((counts >= need).sum())


def class_kl(
    pred_gen: np.ndarray, labels_real: np.ndarray, n_classes: int, eps: float = 1e-6
) -> float:
    """KL(generated || real) between class histograms, in nats; 0 means matching proportions.

    This direction weighs each generated class by how often it is generated, so it stays finite
    (at most about log(1/p_real) per class) under mode collapse; dropped modes are what
    `class_coverage` reports. `eps` is added to every bin of both histograms before
    renormalising, so classes absent from either side do not give log(0).
    """
    p = class_histogram(pred_gen, n_classes) + eps
    q = class_histogram(labels_real, n_classes) + eps
    p, q = p / p.sum(), q / q.sum()
    return max(float(np.sum(p * np.log(p / q))), 0.0)


def evaluate_images(
    net: FeatureNet,
    images: np.ndarray,
    real_feats: np.ndarray,
    real_labels: np.ndarray,
    n_classes: int,
    min_fraction: float = 0.01,
    feats: np.ndarray | None = None,
    *,
    kid_subset_size: int = SUBSET_SIZE,
    kid_subsets: int = SUBSETS,
    seed: int = 0,
    prdc_real: int | None = None,
) -> dict[str, float | int]:
    """All measures for one set of generated images, as plain JSON-ready numbers.
    Precision, recall, density and coverage use equal real and generated counts: the mean
    over disjoint sets of the generated images, each as large as the real subset. `feats`:
    the images' features in another space than `net`'s (as `real_feats`); classes are `net`'s.
    KID's subsets are drawn with `seed`; `prdc_real` caps the real subset PRDC uses."""
    net_feats, pred = features_and_classes(net, images, 512)
    feats = net_feats if feats is None else feats
    real_n, fake_sets, labels_n = equal_count_sets(
        real_feats, feats, real_labels, max_real=prdc_real
    )
    kid, kid_std = kernel_distance(
        real_feats, feats, subset_size=kid_subset_size, subsets=kid_subsets, seed=seed
    )
    return {
        "fd": frechet_distance(feats, real_feats),
        "kid": kid,
        "kid_std": kid_std,
        **prdc_mean(real_n, fake_sets, real_labels=labels_n, n_classes=n_classes),
        "classes_covered": class_coverage(pred, n_classes, min_fraction),
        "class_kl": class_kl(pred, real_labels, n_classes),
    }
