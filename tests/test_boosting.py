"""AdaGAN boosting: β and mixture weights, the theory-star data weights, the mixture classifier,
and boosted members trained in order through the train stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from ensgan.config import adagan_weights, parse_params
from ensgan.ensemble.boosting import (
    beta_for_round,
    classifier_p_real,
    mixture_weights,
    ratio_from_classifier,
    theory_star_weights,
)
from ensgan.gan.samplers import WeightedSampler
from ensgan.layout import Layout
from ensgan.pipeline import prepare, train
from tests.helpers import tiny_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_beta_rule_and_mixture_weights() -> None:
    assert [beta_for_round(t) for t in (1, 2, 3, 4)] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert beta_for_round(1, 0.3) == 1.0 and beta_for_round(5, 0.3) == 0.3
    assert mixture_weights(3) == pytest.approx([1 / 3] * 3)  # β = 1/t keeps them uniform
    assert mixture_weights(3, 0.5) == pytest.approx([0.25, 0.25, 0.5])
    for n, beta in ((1, None), (4, None), (4, 0.2)):  # params resolve the same weights
        assert adagan_weights(n, beta) == pytest.approx(mixture_weights(n, beta))
    with pytest.raises(ValueError):
        beta_for_round(0)


def _bisect_weights(h: np.ndarray, beta: float) -> np.ndarray:
    """Independent: the λ with Σ (λ − (1−β)h)₊ / (Nβ) = 1, found by bisection."""
    n, lo, hi = len(h), 0.0, 1e6
    for _ in range(200):
        lam = (lo + hi) / 2
        total = np.maximum(lam - (1 - beta) * h, 0).sum() / (n * beta)
        lo, hi = (lam, hi) if total < 1 else (lo, lam)
    w = np.maximum(lam - (1 - beta) * h, 0) / (n * beta)
    return w / w.sum()


@pytest.mark.parametrize("beta", [0.5, 0.25, 0.1])
def test_theory_star_weights_form_a_distribution_and_match_the_closed_form(beta: float) -> None:
    h = np.random.default_rng(0).lognormal(0.0, 1.0, 500)
    w, lam = theory_star_weights(h, beta)
    assert lam is not None
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    np.testing.assert_allclose(w, _bisect_weights(h, beta), atol=1e-9)
    order = np.argsort(h)
    assert (np.diff(w[order]) <= 1e-15).all()  # more covered by the mixture, less weight
    assert (w[h > lam / (1 - beta)] == 0).all()  # well covered points are dropped


def test_theory_star_first_round_and_bad_input() -> None:
    w, lam = theory_star_weights(np.array([1.0, 5.0]), 1.0)
    assert lam is None and w.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        theory_star_weights(np.array([]), 0.5)
    with pytest.raises(ValueError):
        theory_star_weights(np.ones(3), 0.0)


def test_ratio_from_classifier() -> None:
    np.testing.assert_allclose(ratio_from_classifier(np.array([0.5, 0.8])), [1.0, 0.25], rtol=1e-6)


def test_weights_move_toward_the_data_the_mixture_misses() -> None:
    """The mixture so far makes only zeros: the classifier finds the ones real, and the next
    member's data weights move onto them."""
    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]
    zeros, ones = images[d.target == 0][:150], images[d.target == 1][:150]
    real = np.concatenate([zeros, ones])
    mixture = images[d.target == 0][-150:]  # covers the zeros only
    p = classifier_p_real(real, mixture, arch="dcgan", width=8, seed=0, epochs=20, batch_size=32)
    w, _ = theory_star_weights(ratio_from_classifier(p), beta=0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[150:].mean() > 1.5 * w[:150].mean()  # weight moves onto what the mixture misses
    sampler = WeightedSampler(w)
    assert sampler.n_unique == int((w > 0).sum())


def test_boosted_members_train_in_order_and_reuse_their_weights(tmp_path: Path) -> None:
    text = tiny_params(train={"ensemble": "boosting", "boosting_epochs": 1})
    (tmp_path / "params.yaml").write_text(text)
    params = parse_params(yaml.safe_load(text))
    layout = Layout(tmp_path)
    prepare.run(params, layout)
    cards = train.run(params, layout, "b")  # b is the second round: a is trained first
    assert list(cards) == ["a", "b"]
    assert params.mixture_weights() == {"a": 0.5, "b": 0.5}
    cache = layout.member("b") / train.BOOST_FILE
    assert cache.exists() and not (layout.member("a") / train.BOOST_FILE).exists()
    with np.load(cache, allow_pickle=False) as f:
        w = f["weights"]
    assert w.sum() == pytest.approx(1.0) and len(w) == cards["b"]["n_train"]
    assert cards["b"]["n_unique_images"] == int((w > 0).sum())
    before = cache.stat().st_mtime_ns
    again = train.run(params, layout)
    assert again == cards and cache.stat().st_mtime_ns == before  # finished, weights reused


def test_boosting_refuses_hand_set_weights() -> None:
    raw = yaml.safe_load(
        tiny_params(train={"ensemble": "boosting"}, combine={"weights": {"a": 1.0}})
    )
    with pytest.raises(ValueError, match="AdaGAN sets the mixture weights"):
        parse_params(raw)
