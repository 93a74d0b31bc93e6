"""The stacking meta-learner: a scikit-learn classifier over the members' discriminator logits.

One feature per member (its discriminator's logit for the image); label 1 for held-out real
images, 0 for ensemble-generated ones. The fitted estimator is saved with skops and loaded back
only if every type in the file is on an explicit allow-list, so loading never runs code a bucket
or a user could have planted (no pickle, no joblib).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ensgan.errors import StackerError
from ensgan.io.cards import StackerCard, read_card, write_card
from ensgan.io.files import atomic_dir
from ensgan.registry import META_LEARNERS

MODEL_FILE = "stacker.skops"

# Every type a saved meta-learner may contain; anything else in a file is refused.
TRUSTED_TYPES = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
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
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))


def random_forest(seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=seed)


def gradient_boosting(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=200, random_state=seed)


def make_meta_learner(model: str, seed: int = 0) -> ClassifierMixin | Pipeline:
    """The named meta-learner, unfitted (scikit-learn conventions: fit/predict_proba)."""
    return META_LEARNERS.load(model)(seed)


def fit_stacker(
    real: np.ndarray, fake: np.ndarray, *, model: str, cv_folds: int, seed: int
) -> tuple[ClassifierMixin | Pipeline, dict]:
    """Cross-validate, then fit on everything. `real`/`fake` are (n, n_members) logits."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature shapes differ: real {real.shape}, fake {fake.shape}")
    x = np.vstack([real, fake])
    y = np.r_[np.ones(len(real), dtype=int), np.zeros(len(fake), dtype=int)]
    folds = min(cv_folds, len(real), len(fake))
    if folds < 2:
        raise StackerError("the stacker needs at least 2 real and 2 generated images")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    est = make_meta_learner(model, seed)
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


def save_stacker(est: ClassifierMixin | Pipeline, out_dir: Path, card: StackerCard) -> None:
    """The model and its card, swapped in together."""
    with atomic_dir(out_dir) as tmp:
        sio.dump(est, tmp / MODEL_FILE)
        write_card(tmp, card)


def load_stacker(stack_dir: Path) -> tuple[ClassifierMixin | Pipeline, StackerCard]:
    """Load the meta-learner, refusing any type not on TRUSTED_TYPES."""
    path = stack_dir / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no stacker at {stack_dir}: run `ensgan stack` first")
    # skops trusts every scikit-learn estimator by default, so get_untrusted_types alone would
    # let e.g. an SVC through: check every type named in the file's schema as well.
    found = _schema_types(path) | set(sio.get_untrusted_types(file=path))
    untrusted = sorted(found - set(TRUSTED_TYPES))
    if untrusted:
        raise StackerError(f"{path} contains types not on the allow-list: {untrusted}")
    est = sio.load(path, trusted=TRUSTED_TYPES)
    return est, read_card(StackerCard, stack_dir)


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
    """P(real) for each row of member logits."""
    classes = list(est.classes_)
    return est.predict_proba(features)[:, classes.index(1)]
