"""Guards added after review: a stale stacker is refused, PRDC's real subset is unbiased by the
data's order, splits that leave too little to train are refused, and the stacker section of
the metrics is not a model row."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from ensgan.config import ConfigError, parse_params
from ensgan.data.prepared import DataError, assign_splits
from ensgan.eval.prdc import equal_counts, prdc
from ensgan.eval.report import metrics_table
from ensgan.pipeline.common import check_stacker_is_current, stacker_settings
from tests.helpers import tiny_params


def _members(**shas: str) -> dict:
    return {n: SimpleNamespace(card=SimpleNamespace(weights_sha256=s)) for n, s in shas.items()}


def test_a_stacker_fitted_on_other_weights_or_params_is_refused() -> None:
    params = parse_params(yaml.safe_load(tiny_params()))
    card = SimpleNamespace(
        member_weights_sha256={"a": "1", "b": "2"}, settings=stacker_settings(params)
    )
    check_stacker_is_current(params, card, _members(a="1", b="2"))  # current: no error
    with pytest.raises(ConfigError, match=r"members \['b'\] were \(re\)trained"):
        check_stacker_is_current(params, card, _members(a="1", b="3"))
    changed = parse_params(yaml.safe_load(tiny_params(stack={"drs_percentile": 99})))
    with pytest.raises(ConfigError, match="drs_percentile"):
        check_stacker_is_current(changed, card, _members(a="1", b="2"))


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


def test_splits_that_leave_too_little_to_train_are_refused() -> None:
    fractions = {"stack": 0.05, "calibrate": 0.05, "evaluate": 0.8}
    for n in (10, 20):
        with pytest.raises(DataError, match="data.splits"):
            assign_splits(n, None, fractions, 0)


def test_the_stacker_section_is_not_a_model_row() -> None:
    metrics = {
        "members": {"a": {"fd": 1.0}},
        "stacker": {"model": "logistic", "ece_raw": 0.1, "real_acceptance_by_class": [1.0]},
    }
    table = metrics_table(metrics)
    assert "stacker" not in table and "ece_raw" not in table
