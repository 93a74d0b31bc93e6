"""train.ensemble: clustered in the pipeline: each member's cluster, computed once per data and
settings and kept in models/members/.clusters/, its sampler, and the mixture weights it implies.

The assignment is cached beside the members (one file, written atomically), so members trained
in other processes, or later by `ensgan train NAME`, read the same clusters instead of
computing them again; a change of data, members, settings or the clustering code recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ensgan.config import Params
from ensgan.data.prepared import load_prepared, read_data_card
from ensgan.errors import ConfigError
from ensgan.gan.samplers import UniformSampler
from ensgan.io.files import atomic_write
from ensgan.layout import Layout
from ensgan.provenance import code_version

log = logging.getLogger(__name__)

CLUSTERS = Path(".clusters") / "clusters.npz"


def clusters_key(params: Params, data_sha: str) -> str:
    """What the assignment is made from: the same key, the same clusters."""
    blob = {
        "data": data_sha,
        "k": len(params.members),
        "pca": params.train.cluster_pca,
        "seed": params.train.cluster_seed,
        "code": code_version("ensgan.ensemble.clusters"),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def assign_clusters(params: Params, layout: Layout) -> np.ndarray:
    """Each training image's cluster (0 = the largest), from the cache when it is current."""
    from ensgan.ensemble.clusters import cluster_images, cluster_sizes

    data_card = read_data_card(layout.prepared)
    key = clusters_key(params, data_card.sha256)
    path = layout.members / CLUSTERS
    labels = _cached(path, key, data_card.n_train)
    if labels is not None:
        return labels
    k = len(params.members)
    if data_card.n_train < k:
        raise ConfigError(
            f"train.ensemble: clustered needs at least one training image per member: "
            f"{data_card.n_train} images, {k} members"
        )
    images = load_prepared(layout.prepared).train_images  # the training split only
    tc = params.train
    labels = cluster_images(images, k, components=tc.cluster_pca, seed=tc.cluster_seed)
    log.info("clusters of the training split: %s images", cluster_sizes(labels, k))

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a path
            np.savez(fh, labels=labels, key=np.array(key))

    atomic_write(path, save)
    return labels


def _cached(path: Path, key: str, n: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) == key and f["labels"].shape == (n,):
                return f["labels"]
    except (OSError, KeyError, ValueError):
        return None
    return None


class ClusterSampler(UniformSampler):
    """Uniform draws from one cluster's images; its card says which cluster and how large."""

    def __init__(self, labels: np.ndarray, index: int, params: Params) -> None:
        from ensgan.ensemble.clusters import cluster_sizes

        super().__init__(np.flatnonzero(labels == index))
        sizes = cluster_sizes(labels, len(params.members))
        tc = params.train
        self.card_fields = {
            "cluster": {
                "index": index,
                "size": sizes[index],
                "sizes": sizes,
                "pca": tc.cluster_pca,
                "seed": tc.cluster_seed,
            }  # fmt: skip
        }


def cluster_sampler(params: Params, layout: Layout, name: str) -> ClusterSampler:
    """Member `name` (the i-th in params order) draws from the i-th largest cluster."""
    labels = assign_clusters(params, layout)
    return ClusterSampler(labels, list(params.members).index(name), params)
