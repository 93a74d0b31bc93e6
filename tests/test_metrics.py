"""Metrics: Fréchet distance behaviour, the feature net, and class coverage / KL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ensgan.eval import features as f
from ensgan.eval import metrics as m
from ensgan.eval.prdc import equal_count_sets, equal_counts, prdc, prdc_mean


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as uint8 (N, 1, 8, 8), 0..16 scaled to 0..255."""
    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def net(digits: tuple[np.ndarray, np.ndarray]) -> f.FeatureNet:
    images, labels = digits
    return f.train_feature_net(images[:1400], labels[:1400], n_classes=10, steps=60, seed=0)


def _gauss(n: int = 2000, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


def test_fd_of_a_set_to_itself_is_zero() -> None:
    a = _gauss()
    scale = np.trace(np.cov(a, rowvar=False))
    assert m.frechet_distance(a, a) < 1e-6 * scale


def test_fd_grows_with_shift_and_is_symmetric_and_nonnegative() -> None:
    a, b = _gauss(seed=0), _gauss(seed=1)
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    fds = [m.frechet_distance(a, b + s) for s in shifts]
    assert all(x >= 0 for x in fds)
    assert all(x < y for x, y in zip(fds, fds[1:], strict=False))
    assert m.frechet_distance(a, b) == pytest.approx(m.frechet_distance(b, a), rel=1e-6)


def test_fd_of_a_pure_shift_is_the_squared_mean_difference() -> None:
    a = _gauss()
    assert m.frechet_distance(a, a + 1.0) == pytest.approx(a.shape[1], rel=1e-6)


def test_fd_handles_singular_covariances() -> None:
    a = np.zeros((100, 4))
    a[:, 0] = np.random.default_rng(0).normal(size=100)  # three dead dimensions
    fd = m.frechet_distance(a, a)
    assert math.isfinite(fd) and fd < 1e-3


def _fd_by_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula (pytorch-fid's): scipy's square root of the D x D product."""
    import scipy.linalg

    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root))


def test_fd_matches_the_sqrtm_formula() -> None:
    a, b = _gauss(2000, 8, seed=0), 1.5 * _gauss(700, 8, seed=1) + 0.3
    assert m.frechet_distance(a, b) == pytest.approx(_fd_by_sqrtm(a, b), rel=1e-9)


def test_fd_with_fewer_images_than_features_is_exact() -> None:
    """N < D (a few dozen images in Inception's 2,048 features): singular covariances, whose
    product's root's trace is that of the symmetric (S_a^(1/2) S_b S_a^(1/2))^(1/2)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 40)), 2.0 * rng.normal(size=(9, 40)) + 0.1
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # sqrtm is inexact on a singular S_a
    eig = np.clip(np.linalg.eigvalsh(half @ s_b @ half), 0, None)
    diff = a.mean(0) - b.mean(0)
    exact = diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(eig).sum()
    assert m.frechet_distance(a, b) == pytest.approx(exact, rel=1e-6)
    assert m.frechet_distance(a, a) < 1e-9 * np.trace(s_a)


def test_fd_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        m.frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))


def test_feature_net_beats_chance(net: f.FeatureNet, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    acc = (f.predict_classes(net, images[1400:]) == labels[1400:]).mean()
    assert acc > 0.5
    feats = f.embed(net, images[:10])
    assert feats.shape == (10, 64) and feats.dtype == np.float64


def test_training_is_deterministic(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    a = f.train_feature_net(images[:300], labels[:300], n_classes=10, steps=5, seed=3)
    b = f.train_feature_net(images[:300], labels[:300], n_classes=10, steps=5, seed=3)
    assert np.array_equal(f.embed(a, images[:50]), f.embed(b, images[:50]))


def test_save_load_round_trip(tmp_path, net: f.FeatureNet, digits) -> None:
    images, _ = digits
    path = f.save_feature_net(net, tmp_path / "sub" / "feature_net.safetensors")
    loaded = f.load_feature_net(path)
    assert loaded.config == net.config
    assert np.array_equal(f.embed(loaded, images[:100]), f.embed(net, images[:100]))
    assert not list(path.parent.glob("*.tmp"))


def test_saving_the_same_net_gives_the_same_bytes(tmp_path, net: f.FeatureNet) -> None:
    """DVC hashes the file: identical tensors must give an identical file, every time."""
    paths = [f.save_feature_net(net, tmp_path / f"{i}.safetensors") for i in range(6)]
    assert len({p.read_bytes() for p in paths}) == 1


def test_a_format_1_feature_net_still_loads(tmp_path, net: f.FeatureNet, digits) -> None:
    from safetensors.torch import save_file

    images, _ = digits
    path = tmp_path / "old.safetensors"
    meta = {k: str(v) for k, v in net.config.items()} | {"format": "ensgan.featurenet/1"}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    assert np.array_equal(f.embed(f.load_feature_net(path), images[:20]), f.embed(net, images[:20]))


def test_load_rejects_foreign_safetensors(tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a feature net"):
        f.load_feature_net(path)


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 16), (1, 64)])
def test_feature_net_shapes(channels: int, size: int) -> None:
    net = f.FeatureNet(channels, size, n_classes=4, feature_dim=16)
    images = np.zeros((3, channels, size, size), np.uint8)
    assert f.embed(net, images).shape == (3, 16)
    assert f.predict_classes(net, images).shape == (3,)


def test_embed_rejects_wrong_channels(net: f.FeatureNet) -> None:
    with pytest.raises(ValueError, match="channels"):
        f.embed(net, np.zeros((2, 3, 8, 8), np.uint8))


def test_pseudo_labels_make_n_clusters(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    labels = f.pseudo_labels(images[:500], n_classes=7, seed=0)
    assert labels.shape == (500,)
    assert set(labels.tolist()) == set(range(7))
    assert np.array_equal(labels, f.pseudo_labels(images[:500], n_classes=7, seed=0))


def test_collapse_covers_one_class_with_large_kl() -> None:
    real = np.repeat(np.arange(10), 100)
    gen = np.full(1000, 3)
    assert m.class_coverage(gen, 10) == 1
    assert m.class_kl(gen, real, 10) == pytest.approx(math.log(10), rel=1e-3)


def test_matching_histogram_covers_all_with_zero_kl() -> None:
    real = np.repeat(np.arange(10), 100)
    gen = np.random.default_rng(0).permutation(real)
    assert m.class_coverage(gen, 10) == 10
    assert m.class_kl(gen, real, 10) < 1e-9
    assert m.class_histogram(gen, 10) == pytest.approx(np.full(10, 0.1))


def test_coverage_ignores_stray_samples() -> None:
    pred = np.array([0] * 995 + [1] * 5)  # class 1 holds 0.5% of samples
    assert m.class_coverage(pred, 10) == 1
    assert m.class_coverage(pred, 10, min_fraction=0.0) == 2
    assert m.class_coverage(np.array([], dtype=np.int64), 10) == 0


def test_evaluate_images_returns_plain_numbers(
    net: f.FeatureNet, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    real_feats = f.embed(net, images[:1000])
    out = m.evaluate_images(net, images[1000:1400], real_feats, labels[:1000], 10)
    assert set(out) == {
        "fd",
        "kid",
        "kid_std",
        "classes_covered",
        "class_kl",
        *("precision", "recall", "density", "coverage", "coverage_per_class"),
    }
    assert len(out["coverage_per_class"]) == 10 and min(out["coverage_per_class"]) > 0.3
    assert type(out["fd"]) is float and type(out["class_kl"]) is float
    assert type(out["classes_covered"]) is int
    assert out["classes_covered"] >= 8
    noise = np.random.default_rng(0).integers(0, 256, (400, 1, 8, 8), dtype=np.uint8)
    worse = m.evaluate_images(net, noise, real_feats, labels[:1000], 10)
    assert worse["fd"] > out["fd"] and worse["kid"] > out["kid"] + 3 * out["kid_std"]
    assert type(out["kid"]) is float and out["kid_std"] > 0
    assert worse["precision"] < out["precision"] and worse["coverage"] < out["coverage"]


# Precision, recall, density, coverage (ensgan/eval/prdc.py).


def test_prdc_identical_sets_score_one() -> None:
    x = _gauss(300, 6)
    out = prdc(x, x.copy())
    assert out == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def test_prdc_disjoint_sets_score_zero() -> None:
    x = _gauss(300, 6)
    out = prdc(x, x + 100.0)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_matches_the_authors_package() -> None:
    from prdc import compute_prdc

    real, fake = _gauss(400, 8, seed=1), _gauss(400, 8, seed=2) + 0.4
    ours = prdc(real, fake)
    theirs = compute_prdc(real.astype(np.float32), fake.astype(np.float32), nearest_k=5)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(float(value))


def test_prdc_separates_narrowing_from_diversity() -> None:
    """Keeping only the most typical fakes raises precision and lowers recall and coverage."""
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(600, 4)), rng.normal(size=(2400, 4))
    typical = fake[np.argsort(np.linalg.norm(fake, axis=1))[:600]]
    plain, narrow = prdc(real, fake[:600]), prdc(real, typical)
    assert narrow["precision"] >= plain["precision"]
    assert narrow["recall"] < plain["recall"] - 0.2
    assert narrow["coverage"] < plain["coverage"] - 0.2


def test_prdc_coverage_per_class_sees_a_dropped_mode() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = rng.integers(0, 3, 900)
    real = centres[labels] + rng.normal(size=(900, 2))
    fake_labels = rng.integers(0, 2, 900)  # class 2 never generated
    fake = centres[fake_labels] + rng.normal(size=(900, 2))
    out = prdc(real, fake, real_labels=labels, n_classes=4)
    per_class = out["coverage_per_class"]
    assert per_class[0] > 0.8 and per_class[1] > 0.8 and per_class[2] == 0.0
    assert per_class[3] is None  # no real image of class 3


def test_prdc_equal_counts_and_bad_input() -> None:
    real, fake, labels = equal_counts(np.zeros((10, 2)), np.ones((4, 2)), np.arange(10))
    assert len(real) == len(fake) == len(labels) == 4
    with pytest.raises(ValueError, match="equal D"):
        prdc(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(np.zeros((5, 2)), np.zeros((10, 2)))


def test_prdc_real_subset_does_not_follow_the_datas_order() -> None:
    """Real features sorted by class: the first rows would hold only the first classes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)  # sorted, as a folder of class sub-folders reads
    centres = rng.normal(size=(10, 4)) * 10
    real = centres[labels] + rng.normal(size=(1000, 4))
    fake = centres[rng.integers(0, 10, 500)] + rng.normal(size=(500, 4))
    r, f, lab = equal_counts(real, fake, labels)
    assert len(r) == len(f) == len(lab) == 500
    assert len(np.unique(lab)) == 10  # every class in the subset
    out = prdc(r, f, real_labels=lab, n_classes=10)
    assert None not in out["coverage_per_class"] and min(out["coverage_per_class"]) > 0.5


def test_equal_count_sets_are_disjoint_and_use_every_full_set() -> None:
    real, fake = _gauss(100, 4, seed=1), np.arange(1050, dtype=np.float64)[:, None] * [1, 1, 1, 1]
    real_n, sets, labels = equal_count_sets(real, fake, np.arange(100) % 3)
    assert len(real_n) == 100 and len(labels) == 100
    assert len(sets) == 10 and all(len(s) == 100 for s in sets)
    used = np.concatenate([s[:, 0] for s in sets])
    assert len(np.unique(used)) == 1000  # disjoint: no generated image counted twice
    _, one, _ = equal_count_sets(real, fake[:60])
    assert len(one) == 1 and len(one[0]) == 60  # fewer fakes than reals: one set of them all


def test_prdc_real_caps_the_reference_and_its_sets() -> None:
    """evaluate.prdc_real: a large evaluate split is subsampled (seeded, every class kept),
    and the generated sets shrink with it, so the k-NN matrices stay max_real squared."""
    labels = np.repeat(np.arange(5), 200)  # 1,000 reals sorted by class
    real = _gauss(1000, 4, seed=6) + labels[:, None]
    fake = _gauss(900, 4, seed=7)
    real_n, sets, lab = equal_count_sets(real, fake, labels, max_real=300)
    assert len(real_n) == len(lab) == 300 and len(sets) == 3
    assert all(len(s) == 300 for s in sets) and len(np.unique(lab)) == 5
    again, _, _ = equal_count_sets(real, fake, labels, max_real=300)
    assert np.array_equal(real_n, again)  # the same subset for every row
    whole, one, _ = equal_count_sets(real, fake, labels, max_real=5000)
    assert len(whole) == 900 and len(one) == 1  # a cap above both counts changes nothing


def test_prdc_mean_averages_sets_and_steadies_coverage() -> None:
    real = _gauss(200, 4, seed=2)
    labels = np.arange(200) % 2
    a, b = _gauss(200, 4, seed=3), _gauss(200, 4, seed=4) + 0.5
    both = prdc_mean(real, [a, b], real_labels=labels, n_classes=3)
    pa, pb = (prdc(real, x, real_labels=labels, n_classes=3) for x in (a, b))
    for key in ("precision", "recall", "density", "coverage"):
        assert both[key] == pytest.approx((pa[key] + pb[key]) / 2)
    assert both["coverage_per_class"][0] == pytest.approx(
        (pa["coverage_per_class"][0] + pb["coverage_per_class"][0]) / 2, abs=1e-6
    )
    assert both["coverage_per_class"][2] is None  # no real image of class 2

    same = np.random.default_rng(5).normal(size=(200, 4))  # fakes from the same law

    def coverage(seed: int, n_fake: int) -> float:
        fake = np.random.default_rng(100 + seed).normal(size=(n_fake, 4))
        real_n, sets, _ = equal_count_sets(same, fake)
        return prdc_mean(real_n, sets)["coverage"]

    one_set = np.std([coverage(s, 200) for s in range(12)])
    five_sets = np.std([coverage(s, 1000) for s in range(12)])
    assert five_sets < 0.7 * one_set  # the point of using every generated image
    with pytest.raises(ValueError, match="no generated"):
        prdc_mean(real, [])


# The one metrics table (ensgan/eval/table.py) drives the gate, the plots and the charts.


def test_the_gate_compares_exactly_the_gated_metrics() -> None:
    from ensgan.config import GateConfig
    from ensgan.eval.table import GATED, METRICS
    from ensgan.io.promotion import _LOWER_IS_BETTER

    assert set(GateConfig.model_fields) == set(GATED) == set(_LOWER_IS_BETTER)
    assert all(_LOWER_IS_BETTER[n] == (METRICS[n].higher_is_better is False) for n in GATED)


def test_the_plots_and_charts_read_the_table() -> None:
    import yaml

    from ensgan.eval.charts import FIGURES
    from ensgan.eval.table import CHARTED, PLOTTED
    from ensgan.pipeline.evaluate import models_frame
    from tests.helpers import REPO

    row = {k: 1.0 for k in PLOTTED}
    frame = models_frame({"members": {"a": row}, "ensemble": {"mixture": row}})
    assert list(frame.columns) == ["model", "kind", *PLOTTED]
    assert FIGURES == CHARTED and set(CHARTED) <= set(PLOTTED)
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    shown = set()
    for plot in plots:
        for spec in plot.values():
            for columns in spec["y"].values():
                assert set(columns) <= set(PLOTTED)
                shown |= set(columns)
    assert {"kid", "kid_std"} <= shown  # KID with its noise, beside PRDC


def test_a_new_metric_is_one_entry() -> None:
    """Every entry has a direction or says it has none, a note, and a known row kind."""
    from ensgan.eval.report import _BETTER
    from ensgan.eval.table import METRICS, NOTES

    for metric in METRICS.values():
        assert metric.note and NOTES[metric.name] == metric.note
        assert metric.rows in ("all", "members", "combinations")
        assert (metric.name in _BETTER) == (metric.higher_is_better is not None)


def test_a_saved_feature_net_is_taken_again_only_for_the_same_training(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """evaluate takes the last evaluation's net instead of training one when it was trained
    on the same images, labels, steps and seed: the net training would give again."""
    images, labels = digits[0][:60], digits[1][:60] % 3
    how = {"n_classes": 3, "steps": 3, "seed": 0}
    key = f.training_key(images, labels, **how)
    net = f.train_feature_net(images, labels, **how)
    path = f.save_feature_net(net, tmp_path / "feature_net.safetensors", key)
    again = f.earlier_feature_net(path, key)
    assert again is not None
    retrained = f.train_feature_net(images, labels, **how)
    assert np.array_equal(f.embed(again, images), f.embed(retrained, images))
    other = [
        f.training_key(images, labels, **{**how, "steps": 4}),
        f.training_key(images, labels, **{**how, "seed": 1}),
        f.training_key(images, (labels + 1) % 3, **how),
        f.training_key(images[:59], labels[:59], **how),
        f.training_key(images, labels, **how, device="cuda"),  # a GPU's kernels: other weights
    ]
    assert f.training_key(images, labels, **how, device="cpu") == key
    assert key not in other and all(f.earlier_feature_net(path, k) is None for k in other)
    assert f.earlier_feature_net(tmp_path / "absent.safetensors", key) is None
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert f.earlier_feature_net(tmp_path / "bad.safetensors", key) is None
    untagged = f.save_feature_net(net, tmp_path / "untagged.safetensors")  # an older evaluate's
    assert f.earlier_feature_net(untagged, key) is None
