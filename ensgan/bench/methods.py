"""The benchmark's rows: METHODS maps a row's name to a callable(trial) -> samples.

Every row of one dataset and trial gets the same `Trial` (ensgan.bench.trial): the dataset,
the trial's seed, its training set, the budget (total generator updates, the same for every
row) and the params sections the pipeline's parts run under. A row returns `trial.n_samples`
samples in the dataset's format (float32 (N, 2) points, or uint8 (N, 3, H, W) images), drawn
by the pipeline's combinations (ensgan.ensemble.combinations) from the row's members:

- gan: one generator trained for the whole budget;
- mixture: `trial.members()`, K members on budget / K each, every sample from one of them;
- drs, mh, weighted: those members sampled by the pipeline's combination of that name, on the
  stacker `trial.stacked()` fits exactly as the `stack` stage does (no training of their own);
- boosting: AdaGAN, K rounds of budget / K updates, round t on the data weights the pipeline's
  `boosting_sampler` computes (ensgan.ensemble.boosting.adagan_data_weights) against the
  mixture of the rounds before it;
- gman: one generator for the whole budget against GMAN_DISCRIMINATORS discriminators, GMAN*.

Adding a row is one entry in METHODS (bottom of this file).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ensgan.bench.trial import TrainedGAN, Trial, split_budget
from ensgan.ensemble.boosting import adagan_data_weights, mixture_weights
from ensgan.ensemble.combinations import Ensemble
from ensgan.gan.losses import make_loss
from ensgan.gan.samplers import UniformSampler, WeightedSampler

GMAN_DISCRIMINATORS = 3
GMAN_AGGREGATE = "learned"
CLASSIFIER_POINTS = 10_000  # AdaGAN's classifier fits on a subsample: 100k toy points cost minutes


def _draw(trial: Trial, row: str, ens: Ensemble, combination: str = "mixture") -> np.ndarray:
    """`trial.n_samples` from the pipeline's `combination` of `ens`, seeded by the row."""
    return ens.sample(combination, trial.n_samples, trial.int_seed(row)).images


def gan(trial: Trial) -> np.ndarray:
    """The plain GAN: one generator, the whole budget."""
    return _draw(trial, "gan", trial.ensemble_of([trial.single()]))


def mixture(trial: Trial) -> np.ndarray:
    """K members on budget / K each, every sample from one member drawn uniformly."""
    return _draw(trial, "mixture", trial.ensemble_of(trial.members()))


def drs(trial: Trial) -> np.ndarray:
    """Discriminator rejection sampling per member (no member's share can be rejected away)."""
    return _draw(trial, "drs", trial.stacked(), "drs")


def mh(trial: Trial) -> np.ndarray:
    """Independence Metropolis-Hastings, chains started at the calibration draws' ratios."""
    return _draw(trial, "mh", trial.stacked(), "mh")


def weighted(trial: Trial) -> np.ndarray:
    """The mixture with the stacker's weights: one EM step on π, floored."""
    return _draw(trial, "weighted", trial.stacked(), "weighted")


def boosting_members(trial: Trial) -> list[TrainedGAN]:
    """AdaGAN's K rounds of budget / K updates each (cached on the trial)."""

    def make() -> list[TrainedGAN]:
        rounds: list[TrainedGAN] = []
        for t, steps in enumerate(split_budget(trial.budget, trial.k), start=1):
            seed = trial.int_seed(f"boosting/round-{t}")
            sampler = (
                UniformSampler(np.arange(len(trial.real)))
                if t == 1
                else _round_sampler(trial, rounds, t, seed)
            )
            rounds.append(trial.train(steps, seed, label=f"boosting-{t}", sampler=sampler))
        return rounds

    return trial.cached("boosting", make)


def _round_sampler(trial: Trial, rounds: list[TrainedGAN], t: int, seed: int) -> WeightedSampler:
    """Round t's data weights as the pipeline's boosting_sampler computes them: a fresh
    discriminator of the dataset's architecture separates the training set (a subsample of
    CLASSIFIER_POINTS of it) from the mixture of the rounds so far, and weighs every point."""
    data, real, cfg = trial.data, trial.real_tensor(), trial.train_params
    rng = trial.rng(f"boosting/mixture-{t}")
    fit_rows = rng.choice(len(real), min(len(real), CLASSIFIER_POINTS), replace=False)
    mix = trial.ensemble_of(rounds, mixture_weights(t - 1, cfg.boosting_beta))
    fake = mix.sample("mixture", len(fit_rows), int(rng.integers(2**31 - 1))).images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = data.build_pair()[1].to(real.device)
    weights, _ = adagan_data_weights(
        clf, real, data.to_train(fake).to(real.device), round_=t, beta=cfg.boosting_beta,
        seed=seed, epochs=cfg.boosting_epochs, batch_size=data.batch_size, fit_rows=fit_rows,
    )  # fmt: skip
    return WeightedSampler(weights)


def boosting(trial: Trial) -> np.ndarray:
    """The AdaGAN mixture: the rounds weighted by `mixture_weights(K)` (1/K each for β = 1/t)."""
    rounds = boosting_members(trial)
    weights = mixture_weights(len(rounds), trial.train_params.boosting_beta)
    return _draw(trial, "boosting", trial.ensemble_of(rounds, weights))


def gman_member(trial: Trial) -> TrainedGAN:
    """One generator, the whole budget, GMAN_DISCRIMINATORS discriminators, GMAN* (cached)."""
    return trial.cached(
        "gman",
        lambda: trial.train(
            trial.budget,
            trial.int_seed("gman/seed"),
            label="gman",
            n_discriminators=GMAN_DISCRIMINATORS,
            loss=make_loss("non_saturating", GMAN_AGGREGATE),
        ),
    )


def gman(trial: Trial) -> np.ndarray:
    """GMAN*: the non-saturating loss, the generator's terms combined by a learned λ."""
    return _draw(trial, "gman", trial.ensemble_of([gman_member(trial)]))


Method = Callable[[Trial], np.ndarray]

METHODS: dict[str, Method] = {
    "gan": gan,
    "mixture": mixture,
    "drs": drs,
    "mh": mh,
    "weighted": weighted,
    "boosting": boosting,
    "gman": gman,
}
