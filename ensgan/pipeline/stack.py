"""Stage `stack`: fit the meta-learner, held-out real images (1) against mixture samples (0)."""

from __future__ import annotations

from ensgan.config import Params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.stacking import fit_stacker, save_stacker
from ensgan.io.cards import StackerCard
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble


def run(params: Params, layout: Layout) -> dict:
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout, with_stacker=False)
    real = ens.features(data.holdout_images)
    n_fake = params.stack.n_fake or len(real)
    fake = ens.features(ens.sample("mixture", n_fake, seed=params.stack.seed + 1).images)
    est, info = fit_stacker(
        real, fake, model=params.stack.model, cv_folds=params.stack.cv_folds, seed=params.stack.seed
    )
    card = StackerCard(
        **info,
        members=list(ens.members),
        data_sha256=data.card.sha256,
        member_fingerprints={n: m.card.fingerprint for n, m in ens.members.items() if m.card},
    )
    save_stacker(est, layout.stacker, card)
    return card.model_dump(mode="json")
