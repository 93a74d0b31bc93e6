"""train.ensemble: clustered: the training split cut into one cluster per member.

Luzi et al. (2020) show why data in disconnected parts favours several generators over one:
one generator must map a connected latent space onto every part and spends mass between them.
Here each member sees one k-means cluster of the training images, embedded by a PCA of their
pixels; the mixture weighs each member by its cluster's share of the images, so the mixture
draws each part as often as the data holds it. Only the training split is read, and nothing
of the evaluation (its feature net, its labels): a method that saw the judge would be graded
on its own answers.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

N_INIT = 4  # k-means restarts: the best inertia of these is kept


def cluster_images(images: np.ndarray, k: int, *, components: int, seed: int) -> np.ndarray:
    """Cluster ids in [0, k) for uint8 images (N, C, H, W): k-means on the first
    `components` principal components of their pixels. Cluster 0 is the largest (ties: the
    one whose first image comes first), so members in params order get the clusters by size,
    the same for the same images and seed."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    if not 1 <= k <= len(images):
        raise ValueError(f"cannot cut {len(images)} images into {k} clusters")
    if k == 1:
        return np.zeros(len(images), dtype=np.int64)
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    n = min(components, *flat.shape)
    embedded = PCA(n_components=n, svd_solver="randomized", random_state=seed).fit_transform(flat)
    raw = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit_predict(embedded)
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else len(raw) for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[raw]


def cluster_sizes(labels: np.ndarray, k: int) -> list[int]:
    return [int(x) for x in np.bincount(labels, minlength=k)]
