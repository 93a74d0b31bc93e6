"""The benchmark's ensemble rows beyond the plain mixture, each built from the package's own parts.

- drs, mh, weighted: the K members of `trial.members()` (no training of their own), sampled by
  a density-ratio stacker fitted per trial exactly as the pipeline's `stack` stage fits it
  (ensgan/pipeline/stack.py): features `ratio_features` of each member's logit (the mean over
  its discriminators) and the uniform mixture's analytic log-ratio; `fit_stacker` (logistic,
  5-fold) on fresh real draws (1) against fresh mixture samples (0), `calibrate` (Platt) on
  another fresh pair, then a burn-in of each member's samples for DRS's log M (95th percentile
  of log r̂) and the weighted mixture's weights (`floored_weights`, floor 0.5). Sampling then
  follows ensgan/ensemble/combinations.py `drs`, `mh` and `weighted` step for step, with
  ensgan.ensemble.rejection's `drs_accept_prob` and `mh_final_states`.
- boosting: AdaGAN, K rounds of budget / K updates with ensgan.ensemble.boosting's rules (the
  pipeline's `boosting_sampler`, ensgan/pipeline/train.py): a fresh discriminator of the
  dataset's architecture separates the training set from the mixture so far, its output gives
  the "theory_star" data weights, and the round trains on them (WeightedSampler).
- gman: one generator for the whole budget against 3 discriminators, GMAN* (learned λ).

"Fresh" real draws come from `trial.data.make_real` with each use's own generator: new points
of the 2-D mixtures (an infinite source), and new digit triples for stacked digits (whose
channels are the same 1,797 digits the training set is stacked from: that dataset has no
held-out digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ensgan.ensemble.boosting import (
    beta_for_round,
    mixture_weights,
    ratio_from_classifier,
    theory_star_weights,
    train_classifier,
)
from ensgan.ensemble.combinations import MAX_PROPOSALS_PER_IMAGE
from ensgan.ensemble.rejection import mh_final_states, rejection_fill
from ensgan.ensemble.stacking import Stacker, calibrate, fit_stacker, ratio_features
from ensgan.gan.losses import make_loss
from ensgan.gan.samplers import UniformSampler, WeightedSampler
from ensgan.io.cards import StackerCard
from ensgan.pipeline.stack import floored_weights

if TYPE_CHECKING:
    from ensgan.bench.methods import TrainedGAN, Trial

# The pipeline's defaults (ensgan/config.py StackConfig, EnsembleConfig).
STACK_N = 2500  # real draws and mixture samples each, to fit the stacker and to calibrate it
STACK_MODEL = "logistic"
STACK_CV_FOLDS = 5
CALIBRATION = "sigmoid"
BURN_IN = 2000  # samples per member behind its DRS log M and its `weighted` weight
DRS_PERCENTILE = 95.0
DRS_GAMMA = 0.0
MH_CHAIN = 64  # mixture proposals per output
WEIGHT_FLOOR = 0.5
BOOSTING_EPOCHS = 5  # the AdaGAN classifier's passes over the training set
CLASSIFIER_POINTS = 10_000  # the classifier's training set: 100k toy points cost minutes

GMAN_DISCRIMINATORS = 3
GMAN_AGGREGATE = "learned"


def _int_seed(trial: Trial, purpose: str) -> int:
    """A seed below 2^31 (scikit-learn's limit) for one purpose, from the trial's seed."""
    return int(trial.rng(purpose).integers(2**31 - 1))


# The stacker.


def member_logits(members: Sequence[TrainedGAN], samples: np.ndarray) -> np.ndarray:
    """(N, K): each member's logit (the mean over its discriminators) for stored samples."""
    x = members[0].data.to_train(samples)
    return np.stack([m.logits(x).double().mean(dim=1).numpy() for m in members], axis=1)


@dataclass
class RatioModel:
    """The trial's calibrated density-ratio estimate r̂ = p_data / p_mix over its K members."""

    members: list[TrainedGAN]
    stacker: Stacker  # the package's own: features, clipping and the prior-ratio correction
    log_m: np.ndarray  # (K,) DRS's log M per member
    mean_ratio: np.ndarray  # (K,) mean of exp(min(log r̂, log M)) over each member's burn-in
    weights: np.ndarray  # (K,) the `weighted` row's mixture weights

    def log_ratio(self, samples: np.ndarray) -> np.ndarray:
        """log r̂ for samples in the dataset's stored format (what a row returns)."""
        return self.stacker.log_ratio(member_logits(self.members, samples))


def ratio_model(trial: Trial) -> RatioModel:
    """The trial's stacker, fitted once and shared by drs, mh and weighted."""
    return trial.cached("ratio-model", lambda: fit_ratio_model(trial, trial.members()))


def fit_ratio_model(trial: Trial, members: Sequence[TrainedGAN], n: int = STACK_N) -> RatioModel:
    """Fit, calibrate and burn in the stacker as ensgan/pipeline/stack.py `run` does, with
    fresh real draws in place of the `stack` and `calibrate` splits."""
    from ensgan.bench.methods import mixture_sample

    members = list(members)
    names = [str(i) for i in range(len(members))]
    pi = np.full(len(members), 1.0 / len(members))
    seed = _int_seed(trial, "stacker")

    def pair(purpose: str) -> tuple[np.ndarray, np.ndarray]:
        real = trial.data.make_real(n, trial.rng(f"stacker/{purpose}/real"))
        fake = mixture_sample(members, n, trial.rng(f"stacker/{purpose}/mixture"))
        return tuple(ratio_features(member_logits(members, x), pi) for x in (real, fake))

    real_fit, fake_fit = pair("fit")
    est, info = fit_stacker(
        real_fit, fake_fit, model=STACK_MODEL, cv_folds=STACK_CV_FOLDS, seed=seed
    )
    real_cal, fake_cal = pair("calibrate")
    calibrated, cal_info = calibrate(est, real_cal, fake_cal, method=CALIBRATION, seed=seed)
    card = StackerCard(
        **info,
        **cal_info,
        members=names,
        mixture_weights=dict(zip(names, pi, strict=True)),
        burn_in=BURN_IN,
        drs_log_m={},
        member_weights={},
        data_sha256="",
        member_fingerprints={},
        member_weights_sha256={},
        settings={},
    )
    stacker = Stacker(calibrated, card, np.empty(0))

    # The burn-in (ensgan/pipeline/stack.py `burn_in`).
    rng = trial.rng("stacker/burn-in")
    log_m, mean_ratio = np.empty(len(members)), np.empty(len(members))
    for k, member in enumerate(members):
        lr = stacker.log_ratio(member_logits(members, member.sample(BURN_IN, rng)))
        log_m[k] = np.percentile(lr, DRS_PERCENTILE)
        mean_ratio[k] = np.mean(np.exp(np.minimum(lr, log_m[k])))
    prior = dict(zip(names, pi, strict=True))
    w = floored_weights(prior, dict(zip(names, mean_ratio, strict=True)), WEIGHT_FLOOR)
    weights = np.array([w[m] for m in names])
    stacker.card = card.model_copy(
        update={
            "drs_log_m": dict(zip(names, log_m.tolist(), strict=True)),
            "member_weights": dict(zip(names, weights.tolist(), strict=True)),
        }
    )
    return RatioModel(members, stacker, log_m, mean_ratio, weights)


# The rows that sample by it.


def drs_sample(
    model: RatioModel, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Discriminator rejection sampling per member, then mixed (ensgan/ensemble/combinations.py
    `drs`): each member's quota of the n samples from a uniform multinomial draw, its proposals
    accepted with `drs_accept_prob(log r̂, log M_k, γ=0)` until the quota is filled. Returns
    the samples, the member each came from, and {"accept_rate", "quota"}."""
    members = model.members
    k = len(members)
    quota = rng.multinomial(n, np.full(k, 1.0 / k))
    which = np.repeat(np.arange(k), quota)
    rng.shuffle(which)  # the members' samples interleaved, as a mixture draws them
    out: np.ndarray | None = None
    proposed = 0
    for i, member in enumerate(members):
        slots = np.flatnonzero(which == i)
        if len(slots) == 0:
            continue

        def propose(batch: int, member=member) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
            cand = member.sample(batch, rng)
            return (cand,), model.log_ratio(cand)

        (kept,), used, _ = rejection_fill(
            len(slots), propose, model.log_m[i], DRS_GAMMA, rng,
            max_proposals=MAX_PROPOSALS_PER_IMAGE * len(slots), who=f"member {i}",
        )  # fmt: skip
        if out is None:
            out = np.empty((n, *kept.shape[1:]), dtype=kept.dtype)
        out[slots] = kept
        proposed += used
    assert out is not None
    return out, which, {"accept_rate": n / max(proposed, 1), "quota": quota}


def drs(trial: Trial) -> np.ndarray:
    """DRS on the trial's stacker, per member (no member's share can be rejected away)."""
    return drs_sample(ratio_model(trial), trial.n_samples, trial.rng("drs"))[0]


def _generate(members: Sequence[TrainedGAN], which: np.ndarray, z: torch.Tensor) -> np.ndarray:
    """Sample j from member which[j] at latent z[j], in the stored format."""
    out: np.ndarray | None = None
    for i, member in enumerate(members):
        sel = np.flatnonzero(which == i)
        if len(sel) == 0:
            continue
        part = member.data.to_samples(member.generate(z[torch.from_numpy(sel)]))
        if out is None:
            out = np.empty((len(which), *part.shape[1:]), dtype=part.dtype)
        out[sel] = part
    assert out is not None
    return out


def _step_latents(seed: int, n: int, z_dim: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def mh_sample(
    model: RatioModel,
    n: int,
    rng: np.random.Generator,
    init: np.ndarray,
    chain: int = MH_CHAIN,
) -> tuple[np.ndarray, dict]:
    """Independence Metropolis-Hastings (ensgan/ensemble/combinations.py `mh`): one chain per
    output, `chain` proposals each from the uniform mixture, started at log r̂ `init` of held-out
    real samples; `mh_final_states` picks each chain's final state, which is regenerated from
    its member and latent (so the proposals are never all held at once)."""
    members = model.members
    k = len(members)
    z_dim = members[0].data.z_dim
    which = np.empty((n, chain), dtype=np.int64)
    seeds = rng.integers(0, 2**63 - 1, size=chain)  # step j's latents, for all n chains
    lr = np.empty((n, chain))
    for j in range(chain):  # step j of every chain at once
        which[:, j] = rng.choice(k, size=n, p=np.full(k, 1.0 / k))
        z = _step_latents(int(seeds[j]), n, z_dim)
        lr[:, j] = model.log_ratio(_generate(members, which[:, j], z))
    cur, moves, restarted = mh_final_states(init, lr, rng)
    out: np.ndarray | None = None
    for j in np.unique(cur):  # regenerate each chain's final state
        rows = np.flatnonzero(cur == j)
        z = _step_latents(int(seeds[j]), n, z_dim)[torch.from_numpy(rows)]
        part = _generate(members, which[rows, j], z)
        if out is None:
            out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
        out[rows] = part
    assert out is not None
    stats = {
        "accept_rate": float(moves.sum() / (n * chain)),
        "restarted_chains": float(restarted.mean()),
        "member": which[np.arange(n), cur],
    }
    return out, stats


def mh(trial: Trial) -> np.ndarray:
    """MH on the trial's stacker, chains started at fresh real draws."""
    model, n, rng = ratio_model(trial), trial.n_samples, trial.rng("mh")
    init = model.log_ratio(trial.data.make_real(n, rng))
    return mh_sample(model, n, rng, init)[0]


def weighted(trial: Trial) -> np.ndarray:
    """The mixture with the stacker's weights: one EM step on π, floored at half of 1/K
    (ensgan/pipeline/stack.py `floored_weights`)."""
    from ensgan.bench.methods import mixture_sample

    model = ratio_model(trial)
    return mixture_sample(model.members, trial.n_samples, trial.rng("weighted"), model.weights)


# The rows that train their own generators.


def boosting_members(trial: Trial) -> list[TrainedGAN]:
    """AdaGAN's K rounds of budget / K updates each (cached on the trial)."""
    return trial.cached("boosting", lambda: _boost(trial))


def _boost(trial: Trial) -> list[TrainedGAN]:
    from ensgan.bench.methods import mixture_sample, split_budget

    data, real = trial.data, trial.real_tensor()
    rounds: list[TrainedGAN] = []
    for t, steps in enumerate(split_budget(trial.budget, trial.k), start=1):
        seed = _int_seed(trial, f"boosting/round-{t}")
        if t == 1:
            sampler = UniformSampler(np.arange(len(trial.real)))
        else:  # the pipeline's boosting_sampler, on the trial's training set
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                clf = data.build_pair()[1].to(real.device)
            rng = trial.rng(f"boosting/mixture-{t}")
            n_fit = min(len(real), CLASSIFIER_POINTS)  # AdaGAN's 5 epochs, over a subsample
            fit = torch.from_numpy(rng.choice(len(real), n_fit, replace=False)).to(real.device)
            fake = mixture_sample(rounds, n_fit, rng, weights=mixture_weights(t - 1))
            train_classifier(
                clf,
                real[fit],
                data.to_train(fake).to(real.device),
                seed=seed,
                epochs=BOOSTING_EPOCHS,
                batch_size=data.batch_size,
            )
            with torch.no_grad():  # h at every training point, as AdaGAN weighs them all
                logits = torch.cat([clf(b).flatten() for b in real.split(4096)])
            p = torch.sigmoid(logits).double().cpu().numpy()
            weights, _ = theory_star_weights(ratio_from_classifier(p), beta_for_round(t))
            sampler = WeightedSampler(weights)
        rounds.append(trial.train(steps, seed, label=f"boosting-{t}", sampler=sampler))
    return rounds


def boosting(trial: Trial) -> np.ndarray:
    """The AdaGAN mixture: round t's weight from `mixture_weights(K)` (1/K each for β = 1/t)."""
    from ensgan.bench.methods import mixture_sample

    rounds = boosting_members(trial)
    weights = mixture_weights(len(rounds))
    return mixture_sample(rounds, trial.n_samples, trial.rng("boosting"), weights=weights)


def gman_member(trial: Trial) -> TrainedGAN:
    """One generator, the whole budget, 3 discriminators, GMAN* (cached on the trial)."""
    return trial.cached(
        "gman",
        lambda: trial.train(
            trial.budget,
            _int_seed(trial, "gman/seed"),
            label="gman",
            n_discriminators=GMAN_DISCRIMINATORS,
            loss=make_loss("non_saturating", GMAN_AGGREGATE),
        ),
    )


def gman(trial: Trial) -> np.ndarray:
    """GMAN*: the non-saturating loss, the generator's terms combined by a learned λ."""
    return gman_member(trial).sample(trial.n_samples, trial.rng("gman"))
