"""The stacking meta-learner: it separates real from fake, persists safely, and reads P(real)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skops.io as sio
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from ensgan.ensemble.stacking import (
    MODEL_FILE,
    TRUSTED_TYPES,
    fit_stacker,
    load_stacker,
    make_meta_learner,
    prob_real,
    save_stacker,
)
from ensgan.gan.loaded import LoadedMember
from ensgan.gan.models import build_pair
from ensgan.io.cards import StackerCard

MODELS = ("logistic", "random_forest", "gradient_boosting")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One OpenMP/BLAS/torch thread: on a busy machine spinning thread pools cost seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)


def synthetic_features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of 3 useful members (real ~ N(+1, 1), fake ~ N(-1, 1)) and 1 useless one."""
    real = np.column_stack([rng.normal(1.0, 1.0, (n, 3)), rng.normal(0.0, 1.0, n)])
    fake = np.column_stack([rng.normal(-1.0, 1.0, (n, 3)), rng.normal(0.0, 1.0, n)])
    return real, fake


def auc(est, real: np.ndarray, fake: np.ndarray) -> float:
    y = np.r_[np.ones(len(real)), np.zeros(len(fake))]
    return roc_auc_score(y, prob_real(est, np.vstack([real, fake])))


@pytest.fixture(scope="module")
def fitted() -> dict:
    """One stacker per model, fitted on synthetic logits (shared: fitting is the slow part)."""
    real, fake = synthetic_features(np.random.default_rng(0), 150)
    return {m: fit_stacker(real, fake, model=m, cv_folds=3, seed=0) for m in MODELS}


# Telling real from fake.


@pytest.mark.parametrize("model", MODELS)
def test_stacker_beats_chance_on_synthetic_logits(fitted: dict, model: str) -> None:
    est, info = fitted[model]
    assert info["model"] == model
    assert info["cv_folds"] == 3
    assert info["n_real"] == info["n_fake"] == 150
    assert info["cv_roc_auc"] > 0.8
    assert 0.5 < info["cv_accuracy"] <= 1.0
    assert info["cv_log_loss"] > 0
    fresh_real, fresh_fake = synthetic_features(np.random.default_rng(1), 200)
    assert auc(est, fresh_real, fresh_fake) > 0.8


def _digits_u8() -> np.ndarray:
    """scikit-learn's 8x8 digits as uint8 (N, 1, 8, 8) in 0..255."""
    x = load_digits().images  # 0..16
    return np.round(x * (255.0 / 16.0)).astype(np.uint8)[:, None]


def _noise_u8(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)


def _briefly_trained_member(arch: str, seed: int, real: torch.Tensor) -> LoadedMember:
    """A randomly initialised discriminator, trained for a few steps on digits vs noise."""
    torch.manual_seed(seed)
    g, d = build_pair(arch, z_dim=8, size=8, channels=1, width=4)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(40):
        x_real = real[torch.randint(len(real), (64,), generator=gen)].float() / 127.5 - 1
        x_fake = torch.rand(64, 1, 8, 8, generator=gen) * 2 - 1
        loss = F.softplus(-d(x_real)).mean() + F.softplus(d(x_fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return LoadedMember(f"{arch}{seed}", 8, g.eval(), d.eval(), torch.device("cpu"))


@pytest.fixture(scope="module")
def digit_members() -> tuple[list[LoadedMember], np.ndarray]:
    digits = _digits_u8()
    perm = np.random.default_rng(0).permutation(len(digits))
    train, held_out = digits[perm[:1000]], digits[perm[1000:]]
    members = [
        _briefly_trained_member("mlp", 1, torch.from_numpy(train)),
        _briefly_trained_member("dcgan", 2, torch.from_numpy(train)),
    ]
    return members, held_out


@pytest.mark.parametrize("model", MODELS)
def test_stacker_over_trained_discriminators_tells_digits_from_noise(
    digit_members: tuple[list[LoadedMember], np.ndarray], model: str
) -> None:
    members, held_out = digit_members
    rng = np.random.default_rng(5)

    def feats(images: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(images)
        return np.stack([m.score(t) for m in members], axis=1)

    real_fit, real_fresh = held_out[:200], held_out[200:400]
    est, info = fit_stacker(
        feats(real_fit), feats(_noise_u8(rng, 200)), model=model, cv_folds=3, seed=0
    )
    assert info["cv_roc_auc"] > 0.8
    assert auc(est, feats(real_fresh), feats(_noise_u8(rng, 200))) > 0.8


# Persistence.


@pytest.mark.parametrize("model", MODELS)
def test_save_load_round_trip_predicts_identically(fitted: dict, tmp_path, model: str) -> None:
    est, info = fitted[model]
    card = StackerCard(
        **info, members=["a", "b", "c", "d"], data_sha256="d" * 64, member_fingerprints={}
    )
    save_stacker(est, tmp_path / "stack", card)
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == ["card.json", MODEL_FILE]
    loaded, loaded_card = load_stacker(tmp_path / "stack")
    assert type(loaded) is type(est)
    assert loaded_card == card
    assert json.loads((tmp_path / "stack" / "card.json").read_text())[
        "cv_roc_auc"
    ] == pytest.approx(info["cv_roc_auc"])
    x = np.vstack(synthetic_features(np.random.default_rng(2), 50))
    np.testing.assert_array_equal(loaded.predict_proba(x), est.predict_proba(x))
    np.testing.assert_array_equal(prob_real(loaded, x), prob_real(est, x))


def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    return x, (x[:, 0] > 0).astype(int)


@pytest.mark.parametrize(
    ("est", "bad_type"),
    [
        (SVC(), "sklearn.svm._classes.SVC"),
        (
            make_pipeline(MinMaxScaler(), LogisticRegression()),
            "sklearn.preprocessing._data.MinMaxScaler",
        ),
        (
            make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()),
            "FunctionTransformer",
        ),
    ],
    ids=["svc", "pipeline-minmax", "pipeline-function"],
)
def test_load_refuses_types_off_the_allow_list(tmp_path, est, bad_type: str) -> None:
    # skops itself trusts every scikit-learn estimator, so these are exactly the files a
    # check based on skops' own untrusted list alone would let through.
    est.fit(*_xy())
    assert not any(bad_type in t for t in TRUSTED_TYPES)
    sio.dump(est, tmp_path / MODEL_FILE)
    (tmp_path / "card.json").write_text("{}\n")
    with pytest.raises(ValueError, match="allow-list") as exc:
        load_stacker(tmp_path)
    assert bad_type in str(exc.value)


class Planted:
    """Not scikit-learn: skops reports it as untrusted by itself."""

    def __init__(self) -> None:
        self.classes_ = np.array([0, 1])


def test_load_refuses_non_sklearn_object(tmp_path) -> None:
    sio.dump(Planted(), tmp_path / MODEL_FILE)
    (tmp_path / "card.json").write_text("{}\n")
    with pytest.raises(ValueError, match="Planted"):
        load_stacker(tmp_path)


def test_load_missing_dir(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="ensgan stack"):
        load_stacker(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_stacker(tmp_path / "empty")


# Input checks and P(real).


def test_fit_rejects_bad_shapes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="feature shapes differ"):
        fit_stacker(rng.normal(size=(10, 3)), rng.normal(size=(10, 2)), model="logistic",
                    cv_folds=2, seed=0)  # fmt: skip
    with pytest.raises(ValueError, match="feature shapes differ"):
        fit_stacker(rng.normal(size=10), rng.normal(size=10), model="logistic", cv_folds=2,
                    seed=0)  # fmt: skip
    with pytest.raises(ValueError, match="at least 2"):
        fit_stacker(rng.normal(size=(1, 3)), rng.normal(size=(10, 3)), model="logistic",
                    cv_folds=5, seed=0)  # fmt: skip


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown stacker model"):
        make_meta_learner("svm")


class _Fixed:
    """A 'classifier' with a given class order and fixed probabilities."""

    def __init__(self, classes: list[int], proba: list[list[float]]) -> None:
        self.classes_ = np.array(classes)
        self._proba = np.array(proba)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert len(x) == len(self._proba)
        return self._proba


def test_prob_real_picks_the_class_1_column() -> None:
    x = np.zeros((2, 4))
    proba = [[0.9, 0.1], [0.3, 0.7]]
    np.testing.assert_array_equal(prob_real(_Fixed([0, 1], proba), x), [0.1, 0.7])
    np.testing.assert_array_equal(prob_real(_Fixed([1, 0], proba), x), [0.9, 0.3])


def test_prob_real_of_a_fitted_stacker_is_high_for_real_rows(fitted: dict) -> None:
    est, _ = fitted["logistic"]
    p = prob_real(est, np.array([[3.0, 3.0, 3.0, 0.0], [-3.0, -3.0, -3.0, 0.0]]))
    assert p[0] > 0.9 > 0.1 > p[1]
