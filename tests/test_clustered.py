"""train.ensemble: clustered: the clusters (ensgan/ensemble/clusters.py), each member trained on
its own and weighed by its size (ensgan/pipeline/clustered.py, pipeline/common.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ensgan.config import ConfigError, load_params
from ensgan.ensemble.clusters import cluster_images
from ensgan.layout import Layout
from ensgan.pipeline import prepare, train
from ensgan.pipeline.clustered import CLUSTERS, assign_clusters, cluster_sampler
from ensgan.pipeline.common import load_ensemble
from ensgan.provenance import closure, package_root
from tests.helpers import tiny_params, write_tiny_project

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parts(sizes: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of disconnected parts: part i a bright square at its own place, plus noise;
    returned shuffled, with each image's part."""
    rng = np.random.default_rng(seed)
    part = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    images = rng.integers(0, 40, (len(part), 1, 16, 16)).astype(np.uint8)
    for i, p in enumerate(part):
        r, c = divmod(int(p), 2)
        images[i, 0, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 200
    return images, part


def test_clusters_are_the_datas_parts_by_size_and_the_same_for_a_seed() -> None:
    images, part = parts((20, 50, 30))
    labels = cluster_images(images, 3, components=5, seed=0)
    by_size = {1: 0, 2: 1, 0: 2}  # part 1 is the largest: cluster 0, and so on
    np.testing.assert_array_equal(labels, [by_size[p] for p in part])
    np.testing.assert_array_equal(cluster_images(images, 3, components=5, seed=0), labels)
    assert (cluster_images(images, 1, components=5, seed=0) == 0).all()
    with pytest.raises(ValueError, match="cannot cut 100 images into 101"):
        cluster_images(images, 101, components=5, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        cluster_images(images.astype(np.float32), 2, components=5, seed=0)


def test_the_clustering_code_cannot_see_the_evaluation() -> None:
    """Nothing of ensgan.eval (the judge's feature net, its labels) is in what the clusters
    are made by: a method that saw the judge would be graded on its own answers."""
    for module in ("ensgan.ensemble.clusters", "ensgan.pipeline.clustered"):
        assert not {m for m in closure(module, package_root()) if m.startswith("ensgan.eval")}


def npz_project(root: Path, images: np.ndarray, labels: np.ndarray, **train) -> Path:
    """A tiny clustered project of three MLP members on these images (an .npz source)."""
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "data.npz", images=images[:, 0], labels=labels)  # (N, H, W)
    data = {"source": "npz", "path": "data.npz", "image_size": 16}
    members = {n: {"arch": "mlp", "seed": i, "width": 4} for i, n in enumerate("abc")}
    return write_tiny_project(
        root, data=data, members=members,
        train={"ensemble": "clustered", "cluster_pca": 5, "workers": 1, **train},
    )  # fmt: skip


def test_the_clusters_read_the_training_split_only(tmp_path: Path) -> None:
    """Changing every image outside the training split changes the data, not the clusters."""
    images, part = parts((60, 40, 20))
    runs = []
    for i in range(2):
        root = npz_project(tmp_path / f"p{i}", images, part)
        params, layout = load_params(root / "params.yaml"), Layout(root)
        prepare.run(params, layout)
        split = np.load(layout.prepared / "split.npy")
        images = images.copy()
        images[split != 0] = 255 - images[split != 0]  # the next project's held-out images
        runs.append((json.loads((layout.prepared / "card.json").read_text()),
                     assign_clusters(params, layout)))  # fmt: skip
    (card0, labels0), (card1, labels1) = runs
    assert card0["sha256"] != card1["sha256"]
    np.testing.assert_array_equal(labels0, labels1)
    assert len(labels0) == card0["n_train"] and sorted(np.bincount(labels0)) == sorted(
        np.bincount(part[np.load(tmp_path / "p0/data/prepared/split.npy") == 0])
    )


def test_members_train_on_their_cluster_weighed_by_its_size(tmp_path: Path) -> None:
    images, part = parts((60, 40, 20))
    root = npz_project(tmp_path, images, part, steps=4, checkpoint_every=2)
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    cards = train.run(params, layout, progress=False)
    labels = assign_clusters(params, layout)
    sizes = [int(x) for x in np.bincount(labels)]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == cards["a"]["n_train"]
    for i, name in enumerate("abc"):
        assert cards[name]["cluster"] == {
            "index": i, "size": sizes[i], "sizes": sizes, "pca": 5, "seed": 0,
        }  # fmt: skip
        assert cards[name]["n_unique_images"] == sizes[i]  # every image of it, none else
        pool = cluster_sampler(params, layout, name).pool.numpy()
        assert set(pool) == set(np.flatnonzero(labels == i))
    ens = load_ensemble(params, layout, with_stacker=False)
    assert ens.weights == pytest.approx(
        {n: s / sum(sizes) for n, s in zip("abc", sizes, strict=True)}
    )
    assert ens.sample("mixture", 12, seed=0).images.shape == (12, 1, 16, 16)

    weights = layout.member("b") / "checkpoint" / "generator_ema.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert train.run(params, layout, progress=False) == cards  # found finished, not retrained
    assert weights.stat().st_mtime_ns == mtime
    shutil.rmtree(layout.member("c"))
    (layout.members / CLUSTERS).unlink()  # `ensgan train c` alone: the same cluster again
    assert (
        train.run(params, layout, "c", progress=False)["c"]["fingerprint"]
        == (cards["c"]["fingerprint"])
    )


def test_other_clusters_are_other_members(tmp_path: Path) -> None:
    """The images a member sees are in its fingerprint: clusters cut otherwise (another
    seed, more members) retrain it, and a card without a cluster is refused."""
    images, part = parts((30, 30, 30))
    root = npz_project(tmp_path, images, part, steps=2, checkpoint_every=2)
    params, layout = load_params(root / "params.yaml"), Layout(root)
    prepare.run(params, layout)
    first = train.run(params, layout, progress=False)
    two = params.model_copy(update={"members": dict(list(params.members.items())[:2])})
    again = train.run(two, layout, progress=False)
    assert again["a"]["cluster"]["sizes"] != first["a"]["cluster"]["sizes"]
    assert again["a"]["fingerprint"] != first["a"]["fingerprint"]
    bagged = params.model_copy(
        update={"train": params.train.model_copy(update={"ensemble": "bagging"})}
    )
    train.run(bagged, layout, "a", progress=False)
    with pytest.raises(ConfigError, match="member a was not trained on a cluster"):
        load_ensemble(params, layout, with_stacker=False)


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"combine": {"weights": {"a": 1.0}}}, "the clusters' sizes set the mixture weights"),
        ({"train": {"ensemble": "clustered", "runner": "ray"}}, "not staged to Ray"),
    ],
)
def test_what_clustered_cannot_take_is_refused(tmp_path: Path, sections, match) -> None:
    sections.setdefault("train", {"ensemble": "clustered"})
    path = tmp_path / "params.yaml"
    path.write_text(tiny_params(**sections))
    with pytest.raises(ConfigError, match=match):
        load_params(path)
