"""Stage `stack`: fit the density-ratio stacker, calibrate it, and fit what sampling by it needs.

Real images from the `stack` split (1) against fresh mixture samples (0) fit the meta-learner;
the `calibrate` split against other fresh samples calibrates it. A burn-in of each member's
samples then gives DRS its M per member and the `weighted` combination its weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ensgan.config import Params, StackConfig
from ensgan.data.prepared import Prepared, load_prepared
from ensgan.ensemble.combinations import Ensemble
from ensgan.ensemble.stacking import (
    Stacker,
    calibrate,
    fit_stacker,
    save_stacker,
    stacker_columns,
    stacker_files_match,
)
from ensgan.errors import CardError
from ensgan.io.cards import StackerCard, read_card_if_any
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble, stacker_settings
from ensgan.pipeline.freshness import inputs_sha256, up_to_date
from ensgan.pipeline.survivors import survivors


def run(params: Params, layout: Layout) -> dict:
    params = survivors(params, layout)  # without the members training left out
    stamp = inputs_sha256("stack", params, layout)
    try:
        before = read_card_if_any(StackerCard, layout.stacker)
    except CardError:  # a damaged card: fit again
        before = None
    if (
        before is not None
        and stacker_files_match(layout.stacker, before)  # not replaced since: else fit again
        and up_to_date("stack", before.inputs_sha256, stamp, layout.stacker)
    ):
        return before.model_dump(mode="json") | {"up_to_date": True}
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout, with_stacker=False)
    stacker = fit_stage_stacker(ens, data, params, inputs_sha256=stamp)
    card = save_stacker(stacker.estimator, layout.stacker, stacker.card, stacker.real_log_ratios)
    return card.model_dump(mode="json")


def fit_stage_stacker(
    ens: Ensemble, data: Prepared, params: Params, *, inputs_sha256: str = ""
) -> Stacker:
    """`fit_ensemble_stacker` on the `stack` and `calibrate` splits under `params`, its card
    recording what it was fitted from and the stage's `inputs_sha256` (benchmarks/drs_ratio.py
    fits one in memory too)."""
    cards = {n: m.card for n, m in ens.members.items() if getattr(m, "card", None)}
    return fit_ensemble_stacker(
        ens,
        data.images_of("stack"),
        data.images_of("calibrate"),
        params.stack,
        provenance={
            "data_sha256": data.card.sha256,
            "member_fingerprints": {n: c.fingerprint for n, c in cards.items()},
            "member_weights_sha256": {n: c.weights_sha256 for n, c in cards.items()},
            "settings": stacker_settings(params),
            "inputs_sha256": inputs_sha256,
        },
    )


def fit_ensemble_stacker(
    ens: Ensemble,
    real_fit: np.ndarray,
    real_cal: np.ndarray,
    stack: StackConfig,
    *,
    provenance: Mapping[str, object] | None = None,
) -> Stacker:
    """Fit a stacker for `ens` on real samples `real_fit` against fresh mixture samples,
    calibrate it on `real_cal` against others, and burn it in (in memory; `run` saves it).
    Samples are in the members' stored format, so the benchmark's members are fitted by this
    same code. `provenance` fills the card's record of the data, members and settings (empty
    when fitted in memory). Also sets `ens.stacker`, so the ensemble samples by it at once."""
    ens.stack_inputs = stack.features  # what the stacker reads, from the config it is fitted under
    ens.stacker = None  # an earlier stacker may read other inputs: none scores the fakes
    pi = np.array([ens.weights[m] for m in ens.members])

    def rows(samples: np.ndarray) -> np.ndarray:
        return stacker_columns(ens.features(samples), pi)

    def fakes(n_real: int, seed: int) -> np.ndarray:
        return rows(ens.sample("mixture", stack.n_fake or n_real, seed=seed).images)

    est, info = fit_stacker(
        rows(real_fit),
        fakes(len(real_fit), stack.seed + 1),
        model=stack.model,
        cv_folds=stack.cv_folds,
        seed=stack.seed,
    )
    calibrated, cal_info = calibrate(
        est,
        rows(real_cal),
        fakes(len(real_cal), stack.seed + 2),
        method=stack.calibration,
        seed=stack.seed,
    )
    card = StackerCard(
        **info,
        **cal_info,
        members=list(ens.members),
        mixture_weights=dict(ens.weights),
        burn_in=stack.burn_in,
        drs_log_m={},
        member_weights={},
        **{**_NO_PROVENANCE, **(provenance or {})},
    )
    stacker = Stacker(calibrated, card, np.empty(0))
    ens.stacker = stacker
    log_m, weights = burn_in(
        ens, stack.burn_in, stack.drs_percentile, stack.weight_floor, stack.seed + 3
    )
    stacker.card = card.model_copy(update={"drs_log_m": log_m, "member_weights": weights})
    stacker.real_log_ratios = ens.log_ratio(real_cal)
    return stacker


# What a stacker fitted in memory records of its data, members and settings: nothing.
_NO_PROVENANCE: dict[str, object] = {
    "data_sha256": "",
    "member_fingerprints": {},
    "member_weights_sha256": {},
    "settings": {},
}


def burn_in(
    ens: Ensemble, n: int, percentile: float, floor: float, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Per member, from `n` of its samples: DRS's log M (a percentile of log r̂) and the
    `weighted` mixture's weights π_k ∝ π_k · mean(r̂), floored at `floor` × π_k."""
    rng = np.random.default_rng(seed)
    log_m, mean_ratio = {}, {}
    for name in ens.members:
        lr = ens.log_ratio(ens.member_sample(name, rng.integers(0, 2**31 - 1, size=n)))
        log_m[name] = float(np.percentile(lr, percentile))
        mean_ratio[name] = float(np.mean(np.exp(np.minimum(lr, log_m[name]))))
    return log_m, floored_weights(ens.weights, mean_ratio, floor)


def floored_weights(
    prior: dict[str, float], mean_ratio: dict[str, float], floor: float
) -> dict[str, float]:
    """π_k = f_k + (1 − Σf) · π_k r_k / Σ π_j r_j with f_k = floor · π_k: one EM step on the
    mixture weights, and no member below `floor` of its prior share."""
    raw = {m: prior[m] * mean_ratio[m] for m in prior}
    total = sum(raw.values())
    if total <= 0 or not np.isfinite(total):
        return dict(prior)
    base = {m: floor * prior[m] for m in prior}
    rest = 1.0 - sum(base.values())
    return {m: base[m] + rest * raw[m] / total for m in prior}
