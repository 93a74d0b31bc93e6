"""The stacking meta-learner: it separates real from fake, persists safely, and reads P(real)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

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
    REAL_RATIOS_FILE,
    STACKER_FILES,
    TRUSTED_TYPES,
    _schema_types,
    calibrate,
    expected_calibration_error,
    fit_stacker,
    load_stacker,
    make_meta_learner,
    prob_real,
    ratio_features,
    save_stacker,
    stacker_columns,
    stacker_files_match,
)
from ensgan.errors import StackerError
from ensgan.gan.loaded import LoadedMember
from ensgan.gan.models import build_pair
from ensgan.io.cards import StackerCard, read_card, write_card

MODELS = ("logistic", "logistic_pca", "random_forest", "gradient_boosting")


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


def stacker_card(info: dict, members: list[str], cal_info: dict | None = None) -> StackerCard:
    cal_info = cal_info or {
        "calibration": "sigmoid", "calibration_roc_auc": 0.9, "ece_raw": 0.1,
        "ece_calibrated": 0.05, "brier_raw": 0.2, "brier_calibrated": 0.18,
        "n_calibrate_real": 10, "n_calibrate_fake": 10, "log_prior_ratio": 0.0,
    }  # fmt: skip
    return StackerCard(
        **info, **cal_info, members=members,
        mixture_weights={m: 1 / len(members) for m in members}, burn_in=10,
        drs_log_m={m: 1.0 for m in members}, member_weights={m: 1 / len(members) for m in members},
        data_sha256="d" * 64, member_fingerprints={}, member_weights_sha256={}, settings={},
    )  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_save_load_round_trip_predicts_identically(
    fitted: dict, tmp_path, model: str, method: str
) -> None:
    est, info = fitted[model]
    real, fake = synthetic_features(np.random.default_rng(3), 60)
    calibrated, cal_info = calibrate(est, real, fake, method=method, seed=0)
    card = stacker_card(info, ["a", "b", "c"], cal_info)  # 3 members + the mixture column
    ratios = np.array([0.5, -1.0, 2.0])
    written = save_stacker(calibrated, tmp_path / "stack", card, ratios)
    assert written == card.model_copy(update={"files_sha256": written.files_sha256})
    assert sorted(written.files_sha256) == sorted([MODEL_FILE, REAL_RATIOS_FILE])
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == [
        "card.json",
        REAL_RATIOS_FILE,
        MODEL_FILE,
    ]
    loaded = load_stacker(tmp_path / "stack")
    assert type(loaded.estimator) is type(calibrated)
    assert loaded.card == written
    np.testing.assert_array_equal(loaded.real_log_ratios, ratios)
    x = np.vstack(synthetic_features(np.random.default_rng(2), 50))
    np.testing.assert_array_equal(loaded.estimator.predict_proba(x), calibrated.predict_proba(x))
    logits = x[:, :3]
    np.testing.assert_array_equal(
        loaded.prob_real(logits), prob_real(calibrated, ratio_features(logits, np.ones(3) / 3))
    )


# The stacker as a density-ratio estimator.


def test_ratio_features_add_the_mixtures_analytic_log_ratio() -> None:
    logits = np.array([[0.0, 0.0], [2.0, -1.0], [50.0, 50.0]])
    out = ratio_features(logits, np.array([0.5, 0.5]))
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out[:, :2], logits)
    # p_k/p_data = e^-l_k, so p_mix/p_data = sum_k pi_k e^-l_k.
    expected = -np.log(0.5 * np.exp(-logits[:, 0]) + 0.5 * np.exp(-logits[:, 1]))
    np.testing.assert_allclose(out[:, 2], expected)
    # A member of weight 0 does not count.
    only_first = ratio_features(logits, np.array([1.0, 0.0]))
    np.testing.assert_allclose(only_first[:, 2], logits[:, 0])


def test_expected_calibration_error_on_known_cases() -> None:
    y = np.array([1, 1, 0, 0])
    assert expected_calibration_error(y, np.array([1.0, 1.0, 0.0, 0.0])) == 0.0
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 1.0
    # Everything at 0.5 with half positives is perfectly calibrated.
    assert expected_calibration_error(y, np.full(4, 0.5)) == 0.0


def test_calibration_lowers_ece_and_recovers_a_known_ratio() -> None:
    """Real ~ N(1, 1), fake ~ N(-1, 1): the true log-ratio is 2x. A heavily regularised
    logistic regression ranks right but is underconfident; calibrating on its own split fixes
    its probabilities, and the stacker's log-ratio then follows 2x."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(1.0, 1.0, (n, 1)), rng.normal(-1.0, 1.0, (n, 1))

    est = LogisticRegression(C=1e-4).fit(np.vstack(draw(500)), np.r_[np.ones(500), np.zeros(500)])
    calibrated, info = calibrate(est, *draw(1000), method="sigmoid", seed=0)
    assert info["ece_raw"] > 0.15 and info["ece_calibrated"] < 0.05
    assert info["brier_calibrated"] < info["brier_raw"]
    assert info["log_prior_ratio"] == 0.0
    x = np.linspace(-1.5, 1.5, 7)[:, None]
    p = np.clip(prob_real(calibrated, x), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(np.log(p / (1 - p)), 2 * x[:, 0], atol=0.3)


def test_calibration_needs_both_classes() -> None:
    est = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="at least 2 real and 2 generated"):
        calibrate(est, np.zeros((1, 1)), np.zeros((5, 1)), method="sigmoid", seed=0)


def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    return x, (x[:, 0] > 0).astype(int)


def _vouched_for(stack_dir: Path, est: object) -> None:
    """`est` saved as a stacker whose card records its files' sha256, as if `ensgan stack`
    had written it: the allow-list still refuses what is off it."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    sio.dump(est, stack_dir / MODEL_FILE)
    np.save(stack_dir / REAL_RATIOS_FILE, np.zeros(3))
    hashes = {n: hashlib.sha256((stack_dir / n).read_bytes()).hexdigest() for n in STACKER_FILES}
    info = {"model": "logistic", "cv_folds": 2, "cv_roc_auc": 0.5, "cv_roc_auc_std": 0.0,
            "cv_accuracy": 0.5, "cv_log_loss": 0.7, "n_real": 2, "n_fake": 2}  # fmt: skip
    card = stacker_card(info, ["a"]).model_copy(update={"files_sha256": hashes})
    write_card(stack_dir, card)


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
    _vouched_for(tmp_path, est)
    with pytest.raises(ValueError, match="allow-list") as exc:
        load_stacker(tmp_path)
    assert bad_type in str(exc.value)


class Planted:
    """Not scikit-learn: skops reports it as untrusted by itself."""

    def __init__(self) -> None:
        self.classes_ = np.array([0, 1])


def test_load_refuses_non_sklearn_object(tmp_path) -> None:
    _vouched_for(tmp_path, Planted())
    with pytest.raises(ValueError, match="Planted"):
        load_stacker(tmp_path)


def _crafted(skops_file: Path) -> bytes:
    """The file with every tree's child indices pointed far out of its node array: each type
    in it is still on the allow-list, and scikit-learn would follow those indices in C."""
    out = io.BytesIO()
    with zipfile.ZipFile(skops_file) as src, zipfile.ZipFile(out, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry)
            if entry.filename.endswith(".npy"):
                array = np.load(io.BytesIO(data), allow_pickle=False)
                if array.dtype.names and "left_child" in array.dtype.names:
                    array["left_child"][array["left_child"] >= 0] = 2**40
                    buf = io.BytesIO()
                    np.save(buf, array, allow_pickle=False)
                    data = buf.getvalue()
            dst.writestr(entry, data)
    return out.getvalue()


def test_a_crafted_stacker_of_allowed_types_is_refused_before_it_is_parsed(
    fitted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ensgan.ensemble.stacking as stacking

    est, info = fitted["random_forest"]
    save_stacker(est, tmp_path, stacker_card(info, ["a", "b", "c"]), np.zeros(3))
    genuine = (tmp_path / MODEL_FILE).read_bytes()
    (tmp_path / MODEL_FILE).write_bytes(_crafted(tmp_path / MODEL_FILE))
    assert (tmp_path / MODEL_FILE).read_bytes() != genuine
    allowed = set(TRUSTED_TYPES)  # what the allow-list alone would have let through:
    assert _schema_types(tmp_path / MODEL_FILE) <= allowed
    assert set(sio.get_untrusted_types(file=tmp_path / MODEL_FILE)) <= allowed
    parsed: list[Path] = []
    monkeypatch.setattr(stacking, "_schema_types", lambda path: parsed.append(path) or set())
    monkeypatch.setattr(stacking.sio, "load", lambda *a, **k: parsed.append(a[0]))
    with pytest.raises(StackerError, match=r"stacker\.skops is not the file .*card\.json records"):
        load_stacker(tmp_path)
    assert parsed == [] and not stacker_files_match(tmp_path, read_card(StackerCard, tmp_path))


def test_replaced_real_log_ratios_and_a_card_without_hashes_are_refused(
    fitted: dict, tmp_path: Path
) -> None:
    est, info = fitted["logistic"]
    save_stacker(est, tmp_path, stacker_card(info, ["a", "b", "c"]), np.zeros(3))
    assert stacker_files_match(tmp_path, read_card(StackerCard, tmp_path))
    np.save(tmp_path / REAL_RATIOS_FILE, np.full(3, 50.0))  # MH chains would start there
    with pytest.raises(StackerError, match=r"real_log_ratios\.npy is not the file"):
        load_stacker(tmp_path)
    old = json.loads((tmp_path / "card.json").read_text())
    del old["files_sha256"]  # as ensgan wrote cards before it recorded them
    (tmp_path / "card.json").write_text(json.dumps(old))
    with pytest.raises(StackerError, match=r"records no sha256 of stacker\.skops.*ensgan stack"):
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


def test_stacker_columns_keep_the_hidden_columns_after_the_ratio() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(7, 2 + 5))  # 2 member logits, then 5 hidden-layer columns
    out = stacker_columns(inputs, np.array([0.5, 0.5]))
    assert out.shape == (7, 2 + 1 + 5)
    np.testing.assert_array_equal(out[:, :3], ratio_features(inputs[:, :2], np.array([0.5, 0.5])))
    np.testing.assert_array_equal(out[:, 3:], inputs[:, 2:])


def test_logistic_pca_fits_wide_inputs_with_few_rows() -> None:
    """Thousands of hidden columns against a few real images: the PCA never asks for more
    components than a cross-validation fold has rows, and the ratio still points the right
    way on a known case (real images shifted along one direction)."""
    rng = np.random.default_rng(1)
    shift = np.zeros(500)
    shift[:50] = 0.5
    real, fake = rng.normal(size=(20, 500)) + shift, rng.normal(size=(60, 500))
    est, info = fit_stacker(real, fake, model="logistic_pca", cv_folds=5, seed=0)
    assert est.named_steps["pca"].n_components == 80 - 16  # a 5-fold's training rows
    assert info["cv_roc_auc"] > 0.75
    fresh_real, fresh_fake = rng.normal(size=(200, 500)) + shift, rng.normal(size=(200, 500))
    assert auc(est, fresh_real, fresh_fake) > 0.75
    # balanced: three fakes per real do not push P(real) of an average image far below 1/2
    assert 0.3 < prob_real(est, np.zeros((1, 500)) + shift / 2)[0] < 0.7
