"""The stacking meta-learner: a calibrated estimate of p_data/p_mix over the members' logits.

Features per image: each member's discriminator logit ℓ_k, plus the mixture's analytic
log-ratio −logsumexp_k(log π_k − ℓ_k) (with optimal discriminators p_k/p_data = e^(−ℓ_k)).
A strongly regularised logistic regression is fitted on the `stack` split (real, 1) against
fresh mixture samples (0), then calibrated (Platt or isotonic) on the `calibrate` split, so
its odds are a density ratio r̂ = p_data/p_mix that DRS, MH and the weighted mixture can use
(ensgan/ensemble/rejection.py), not only a ranking.

The fitted estimator is saved with skops and loaded back only if the file is the one its card
records (sha256) and every type in it is on an explicit allow-list: the allow-list means that
loading never runs code a bucket or a user could have planted (no pickle, no joblib), the hash
that no crafted values of allowed types (a tree's node indices out of bounds) reach scikit-learn.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skops.io as sio
from scipy.special import logsumexp
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ensgan.errors import StackerError
from ensgan.io.cards import CARD, StackerCard, read_card, write_card
from ensgan.io.files import atomic_dir, file_sha256
from ensgan.registry import META_LEARNERS

MODEL_FILE = "stacker.skops"
REAL_RATIOS_FILE = "real_log_ratios.npy"  # the calibrate split's log r̂: where MH chains start
STACKER_FILES = (MODEL_FILE, REAL_RATIOS_FILE)  # each checked against its card's sha256
PCA_COMPONENTS = 64  # logistic_pca: principal components of the stacker's columns
P_CLIP = 1e-7  # calibrated probabilities are clipped to [P_CLIP, 1 - P_CLIP] before log-odds

# Every type a saved meta-learner may contain; anything else in a file is refused.
TRUSTED_TYPES = [
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.decomposition._pca.PCA",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
    "builtins.float",
    "builtins.int",
    "builtins.str",
    "builtins.bool",
    "builtins.tuple",
    "builtins.list",
    "builtins.dict",
    "builtins.slice",
    "builtins.NoneType",
    "builtins.type",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "numpy.uint64",
    "numpy.intp",
]


# The meta-learners named in ensgan/registry.py META_LEARNERS, each unfitted.


def logistic(seed: int) -> Pipeline:
    """Strongly regularised (C=0.01): a smooth ratio, not the best ranking."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.01))


def logistic_pca(seed: int) -> Pipeline:
    """For the `hidden` features (thousands of columns against a few hundred real images):
    standardised, projected on their first PCA_COMPONENTS principal components, then a
    logistic regression regularised harder still (C=0.0003) and balanced between real and
    generated rows. Measured on the default digits in docs/results.md."""
    return make_pipeline(
        StandardScaler(),
        PCA(n_components=PCA_COMPONENTS, random_state=seed),
        LogisticRegression(max_iter=3000, C=3e-4, class_weight="balanced"),
    )


def random_forest(seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=seed)


def gradient_boosting(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=200, random_state=seed)


def make_meta_learner(model: str, seed: int = 0) -> ClassifierMixin | Pipeline:
    """The named meta-learner, unfitted (scikit-learn conventions: fit/predict_proba)."""
    return META_LEARNERS.load(model)(seed)


def ratio_features(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, K) member logits -> (N, K+1): the logits and the mixture's analytic log-ratio
    log p_data/p_mix = −logsumexp_k(log π_k − ℓ_k), for mixture weights π (K,)."""
    logits = np.asarray(logits, np.float64)
    with np.errstate(divide="ignore"):  # a member of weight 0 contributes nothing
        log_pi = np.log(np.asarray(weights, np.float64))
    return np.column_stack([logits, -logsumexp(log_pi[None, :] - logits, axis=1)])


def stacker_columns(inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, K + H) inputs, K member logits first (K = len(weights)) -> (N, K + 1 + H): the
    logits, the mixture's analytic log-ratio, and the H hidden-layer columns unchanged."""
    k = len(weights)
    return np.hstack([ratio_features(inputs[:, :k], weights), inputs[:, k:]])


def fit_stacker(
    real: np.ndarray, fake: np.ndarray, *, model: str, cv_folds: int, seed: int
) -> tuple[ClassifierMixin | Pipeline, dict]:
    """Cross-validate, then fit on everything. `real`/`fake` are (n, n_features) rows."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature shapes differ: real {real.shape}, fake {fake.shape}")
    x = np.vstack([real, fake])
    y = np.r_[np.ones(len(real), dtype=int), np.zeros(len(fake), dtype=int)]
    folds = min(cv_folds, len(real), len(fake))
    if folds < 2:
        raise StackerError("the stacker needs at least 2 real and 2 generated images")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    est = make_meta_learner(model, seed)
    if isinstance(est, Pipeline) and "pca" in est.named_steps:
        # no more components than a cross-validation fold's rows or the columns allow
        fold_rows = len(x) - -(-len(x) // folds)
        est.set_params(pca__n_components=min(PCA_COMPONENTS, x.shape[1], fold_rows))
    res = cross_validate(est, x, y, cv=cv, scoring=("roc_auc", "accuracy", "neg_log_loss"))
    info = {
        "model": model,
        "cv_folds": folds,
        "cv_roc_auc": float(res["test_roc_auc"].mean()),
        "cv_roc_auc_std": float(res["test_roc_auc"].std()),
        "cv_accuracy": float(res["test_accuracy"].mean()),
        "cv_log_loss": float(-res["test_neg_log_loss"].mean()),
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
    }
    est.fit(x, y)
    return est, info


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE: |mean label − mean probability| per equal-width probability bin, weighted by the
    bin's share of rows (Guo et al. 2017)."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def calibrate(
    est: ClassifierMixin | Pipeline,
    real: np.ndarray,
    fake: np.ndarray,
    *,
    method: str,
    seed: int,
) -> tuple[CalibratedClassifierCV, dict]:
    """Calibrate a fitted stacker on its own split. ECE and Brier score are reported before
    and after; "after" is measured out of fold (5-fold), so it is not flattered."""
    x = np.vstack([real, fake])
    y = np.r_[np.ones(len(real), dtype=int), np.zeros(len(fake), dtype=int)]
    folds = min(5, len(real), len(fake))
    if folds < 2:
        raise StackerError("calibration needs at least 2 real and 2 generated images")
    raw = prob_real(est, x)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    wrapped = CalibratedClassifierCV(FrozenEstimator(est), method=method)
    held = cross_val_predict(wrapped, x, y, cv=cv, method="predict_proba")[:, 1]
    calibrated = CalibratedClassifierCV(FrozenEstimator(est), method=method).fit(x, y)
    info = {
        "calibration": method,
        "calibration_roc_auc": float(roc_auc_score(y, raw)),
        "ece_raw": expected_calibration_error(y, raw),
        "ece_calibrated": expected_calibration_error(y, held),
        "brier_raw": float(brier_score_loss(y, raw)),
        "brier_calibrated": float(brier_score_loss(y, held)),
        "n_calibrate_real": int(len(real)),
        "n_calibrate_fake": int(len(fake)),
        # r̂ = p/(1-p) * n_fake/n_real: the odds, corrected for unequal class counts
        "log_prior_ratio": float(np.log(len(fake) / len(real))),
    }
    return calibrated, info


@dataclass
class Stacker:
    """A fitted, calibrated stacker with what sampling by it needs."""

    estimator: ClassifierMixin | Pipeline
    card: StackerCard
    real_log_ratios: np.ndarray  # log r̂ of the calibrate split's real images

    def features(self, inputs: np.ndarray) -> np.ndarray:
        """The meta-learner's columns from `Ensemble.features` rows: the K member logits and
        the mixture's analytic log-ratio, then any hidden-layer columns as they are."""
        weights = np.array([self.card.mixture_weights[m] for m in self.card.members])
        return stacker_columns(inputs, weights)

    def prob_real(self, inputs: np.ndarray) -> np.ndarray:
        """Calibrated P(real) for each row of stacker inputs (member logits first)."""
        return prob_real(self.estimator, self.features(inputs))

    def log_ratio(self, inputs: np.ndarray) -> np.ndarray:
        """log r̂ = log p_data/p_mix for each row of stacker inputs."""
        return self.log_ratio_of(self.prob_real(inputs))

    def log_ratio_of(self, prob_real: np.ndarray) -> np.ndarray:
        """log r̂ from the calibrated P(real) `prob_real` gives (images scored already)."""
        p = np.clip(prob_real, P_CLIP, 1.0 - P_CLIP)
        return np.log(p) - np.log1p(-p) + self.card.log_prior_ratio


def save_stacker(
    est: ClassifierMixin | Pipeline,
    out_dir: Path,
    card: StackerCard,
    real_log_ratios: np.ndarray,
) -> StackerCard:
    """The model, the real images' log-ratios and the card recording their sha256, swapped in
    together; returns the card as written."""
    with atomic_dir(out_dir) as tmp:
        sio.dump(est, tmp / MODEL_FILE)
        np.save(tmp / REAL_RATIOS_FILE, np.asarray(real_log_ratios, np.float64))
        hashes = {name: file_sha256(tmp / name) for name in STACKER_FILES}
        card = card.model_copy(update={"files_sha256": hashes})
        write_card(tmp, card)
    return card


def check_stacker_files(stack_dir: Path, card: StackerCard) -> None:
    """Refuse the stacker unless each of its files is the one its card records: a file
    changed or replaced since `ensgan stack` wrote it (a crafted stacker.skops whose types are
    all allowed can still crash scikit-learn) is never parsed."""
    for name in STACKER_FILES:
        path, want = stack_dir / name, card.files_sha256.get(name)
        if want is None:
            raise StackerError(
                f"{stack_dir / CARD} records no sha256 of {name} (written by an older ensgan, "
                "or not by ensgan): run `ensgan stack` again"
            )
        if not path.is_file() or file_sha256(path) != want:
            raise StackerError(
                f"{path} is not the file {stack_dir / CARD} records (missing, changed or "
                "replaced since `ensgan stack` wrote it): refusing to load it; run `ensgan "
                "stack` again"
            )


def stacker_files_match(stack_dir: Path, card: StackerCard) -> bool:
    try:
        check_stacker_files(stack_dir, card)
    except StackerError:
        return False
    return True


def load_stacker(stack_dir: Path) -> Stacker:
    """Load the meta-learner: only the file its card records, and only if every type in it is
    on TRUSTED_TYPES."""
    path = stack_dir / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no stacker at {stack_dir}: run `ensgan stack` first")
    card = read_card(StackerCard, stack_dir)
    check_stacker_files(stack_dir, card)  # before a byte of either file is parsed
    # skops trusts every scikit-learn estimator by default, so get_untrusted_types alone would
    # let e.g. an SVC through: check every type named in the file's schema as well.
    found = _schema_types(path) | set(sio.get_untrusted_types(file=path))
    untrusted = sorted(found - set(TRUSTED_TYPES))
    if untrusted:
        raise StackerError(f"{path} contains types not on the allow-list: {untrusted}")
    est = sio.load(path, trusted=TRUSTED_TYPES)
    for field in ("mixture_weights", "drs_log_m", "member_weights"):
        if set(getattr(card, field)) != set(card.members):
            raise StackerError(
                f"{stack_dir / 'card.json'}: {field} does not name exactly its members "
                f"{card.members}; run `ensgan stack` again"
            )
    try:
        ratios = np.load(stack_dir / REAL_RATIOS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StackerError(
            f"cannot read {stack_dir / REAL_RATIOS_FILE} ({exc}); run `ensgan stack` again"
        ) from None
    if ratios.dtype != np.float64 or ratios.ndim != 1:
        raise StackerError(f"{stack_dir / REAL_RATIOS_FILE} is not a 1-D float64 array")
    return Stacker(est, card, ratios)


def _schema_types(path: Path) -> set[str]:
    """Every "module.class" named by a node in a skops file's schema.json."""
    with zipfile.ZipFile(path) as zf:
        schema = json.loads(zf.read("schema.json"))
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and "__module__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def prob_real(est: ClassifierMixin | Pipeline, features: np.ndarray) -> np.ndarray:
    """The estimator's P(real) for each row of features."""
    classes = list(est.classes_)
    return est.predict_proba(features)[:, classes.index(1)]
