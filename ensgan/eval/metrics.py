"""Measures for generated images: a domain-specific Fréchet distance, precision, recall,
density and coverage (ensgan/eval/prdc.py), class coverage and KL.

The Fréchet distance is computed on the project's own feature net (ensgan/eval/features.py):
its numbers are comparable only between runs that share that net (same data, steps and seed);
they are NOT comparable to published FIDs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg

from ensgan.eval.features import FeatureNet, features_and_classes
from ensgan.eval.prdc import equal_count_sets, prdc_mean


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (as pytorch-fid).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)); when the product is singular enough
    for sqrtm to fail, eps*I is added to both covariances first.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 rows to fit a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = _sqrtm(s_a @ s_b)
    if covmean is None:
        offset = np.eye(len(s_a)) * eps
        covmean = _sqrtm((s_a + offset) @ (s_b + offset))
        if covmean is None:
            raise ValueError("matrix square root failed even after adding eps*I")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean)
    return max(float(fd), 0.0)  # tiny negatives are rounding noise


def _sqrtm(m: np.ndarray) -> np.ndarray | None:
    """scipy's sqrtm, or None when the result is not finite or not a square root of `m`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular-matrix warnings are handled by the caller
        root = scipy.linalg.sqrtm(m)
    if not np.isfinite(root).all():
        return None
    scale = max(np.linalg.norm(m), 1e-300)
    return root if np.linalg.norm(root @ root - m) / scale < 1e-3 else None


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
) -> dict[str, float | int]:
    """All measures for one set of generated images, as plain JSON-ready numbers.
    Precision, recall, density and coverage use equal real and generated counts: the mean
    over disjoint sets of the generated images, each as large as the real subset."""
    feats, pred = features_and_classes(net, images, 512)
    real_n, fake_sets, labels_n = equal_count_sets(real_feats, feats, real_labels)
    return {
        "fd": frechet_distance(feats, real_feats),
        **prdc_mean(real_n, fake_sets, real_labels=labels_n, n_classes=n_classes),
        "classes_covered": class_coverage(pred, n_classes, min_fraction),
        "class_kl": class_kl(pred, real_labels, n_classes),
    }
