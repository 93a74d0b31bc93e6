"""Combining members: mixtures, pixel mean, and selection by the stacker's density ratio.

- mixture: each image comes from one member, drawn with the mixture weights;
- mean: the pixel mean of every member's output for the same latent (the combination the
  original ensemble-GAN write-up proposes);
- vote: `vote_oversample` candidates per image are drawn from the mixture, and the ones the
  stacker rates most real are kept (the γ→∞ limit of rejection sampling: it narrows, and is
  kept as the documented baseline of what not to do);
- drs: discriminator rejection sampling on the calibrated ratio, per member (each member's
  share of the images is fixed by the mixture weights, so no member's modes can be removed),
  then mixed;
- mh: independence Metropolis-Hastings chains on the calibrated ratio, proposals from the mixture;
- weighted: the mixture with the stacker's weights (one EM step on π, floored).
Every image carries its latent seed, so any single image can be regenerated from the manifest.
Every sample records its acceptance rate and effective sample size (ensgan/ensemble/rejection.py).
The members are anything of ensgan.ensemble.members.Member's shape: pipeline members (uint8
images) or the benchmark's GANs (float32 points too), sampled by this same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ensgan.ensemble.members import Member, latents, member_sample
from ensgan.ensemble.rejection import kish_ess, mh_final_states, rejection_fill
from ensgan.ensemble.stacking import Stacker
from ensgan.errors import StackerError
from ensgan.registry import COMBINATIONS

METHODS = tuple(COMBINATIONS)  # every combination, in the registry's order
CHUNK = 512  # images whose stacker inputs are held at once: blocks that fit in a cache, not
# arrays so large that each is fresh memory the system must map and zero


def collapse(images: np.ndarray) -> str | None:
    """Why a set of one member's images is unusable, or None: every image the same picture,
    or every image one flat value (blank)."""
    if len(images) == 0:
        return None
    flat = images.reshape(len(images), -1)
    if (flat == flat[0, 0]).all():
        return f"all {len(images)} images are blank (every pixel {int(flat[0, 0])})"
    if len(images) > 1 and (flat == flat[0]).all():
        return f"all {len(images)} images are the same picture"
    return None


@dataclass
class Sample:
    images: np.ndarray  # the members' stored format: uint8 (N, C, H, W), or float32 (N, 2)
    members: list[str]  # the member each image came from ("mean" for pixel means)
    seeds: np.ndarray  # int64 latent seed per image
    scores: np.ndarray | None = None  # stacker P(real) per image, when a stacker is present
    stats: dict[str, float] = field(default_factory=dict)  # accept_rate, ess, ...

    def rows(self) -> list[dict]:
        return [
            {
                "member": m,
                "seed": int(s),
                "score": None if self.scores is None else round(float(self.scores[i]), 6),
            }
            for i, (m, s) in enumerate(zip(self.members, self.seeds, strict=True))
        ]

    def collapsed(self) -> dict[str, str]:
        """{member: why} for each member whose images here have collapsed."""
        members = np.asarray(self.members)
        found = {m: collapse(self.images[members == m]) for m in dict.fromkeys(self.members)}
        return {m: why for m, why in found.items() if why}


@dataclass
class Ensemble:
    members: dict[str, Member]
    weights: dict[str, float] = field(default_factory=dict)  # normalised; uniform when empty
    stacker: Stacker | None = None  # the calibrated density-ratio estimator
    vote_oversample: int = 4
    drs_gamma: float = 0.0
    drs_temperature: float = 1.0  # DRS filters by r̂^T: T < 1 flattens the ratio
    mh_chain: int = 64
    stack_inputs: str = "logits"  # logits | hidden: what `features` gives the stacker

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        if not self.weights:
            self.weights = {m: 1.0 / len(self.members) for m in self.members}
        z = {m.z_dim for m in self.members.values()}
        if len(z) != 1:
            raise ValueError(f"members disagree on z_dim: {sorted(z)}")

    @property
    def z_dim(self) -> int:
        return next(iter(self.members.values())).z_dim

    # Features and scores.

    def features(self, images: np.ndarray) -> np.ndarray:
        """The stacker's inputs: (N, K) discriminator logits, one column per member in
        `members` order, then (stack_inputs "hidden") each member's last hidden layer."""
        if self.stack_inputs == "logits":
            return np.stack([m.logits(images) for m in self.members.values()], axis=1)
        pairs = (m.hidden_and_logits(images) for m in self.members.values())
        hidden, logits = zip(*pairs, strict=True)
        return np.hstack([np.stack(logits, axis=1), *hidden])

    def _by_chunk(self, fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        """fn over the stacker inputs of `images`, a chunk at a time: with hidden layers the
        inputs of 60,000 images would take gigabytes."""
        parts = [fn(self.features(images[i : i + CHUNK])) for i in range(0, len(images), CHUNK)]
        return np.concatenate(parts) if parts else np.empty(0)

    def score(self, images: np.ndarray) -> np.ndarray | None:
        """The stacker's calibrated P(real) per image (None without a stacker)."""
        if self.stacker is None:
            return None
        return self._by_chunk(self.stacker.prob_real, images)

    def log_ratio(self, images: np.ndarray) -> np.ndarray:
        """log r̂ = log p_data/p_mix per image, from the calibrated stacker."""
        return self._by_chunk(self.need_stacker("the density ratio").log_ratio, images)

    def need_stacker(self, what: str) -> Stacker:
        if self.stacker is None:
            raise StackerError(f"{what} needs a fitted stacker: run `ensgan stack` first")
        return self.stacker

    # Sampling.

    def member_sample(self, name: str, seeds: np.ndarray) -> np.ndarray:
        return member_sample(self.members[name], seeds)

    def pixel_mean(self, seeds: np.ndarray) -> np.ndarray:
        """The pixel mean of every member's output for each seed's latent, stored as the
        first member stores its samples."""
        z = latents(seeds, self.z_dim)
        total = None
        for m in self.members.values():
            x = m.generate(z)
            total = x if total is None else total + x
        return next(iter(self.members.values())).to_samples(total / len(self.members))

    def regenerate(self, member: str, seed: int) -> np.ndarray:
        """One image again from a manifest row's member and latent seed: (C, H, W) uint8."""
        if member == "mean":
            return self.pixel_mean(np.array([seed]))[0]
        if member not in self.members:
            raise ValueError(f"no member {member!r} in this ensemble ({sorted(self.members)})")
        return self.member_sample(member, np.array([seed]))[0]

    def sample(self, method: str, n: int, seed: int) -> Sample:
        """`n` images from the named combination (ensgan/registry.py COMBINATIONS)."""
        try:
            combine = COMBINATIONS.load(method)
        except ValueError:
            raise ValueError(
                f"unknown combination method {method!r}; choose from {METHODS}"
            ) from None
        out = combine(self, n, np.random.default_rng(seed))
        if out.scores is None:
            out.scores = self.score(out.images)
        out.stats = {"accept_rate": 1.0, "ess": float(n), **out.stats}
        return out


def mixture(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """Each image from one member, drawn with the mixture weights."""
    return _mixture(ens, n, rng, ens.weights)


def weighted(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """The mixture with weights π_k ∝ π_k · E_{x~G_k}[r̂(x)] (one EM step on the weights, since
    that expectation is E_data[p_k/p_mix]; r̂ clipped at the member's DRS M so that a few
    outliers cannot dominate the mean), floored at a share of the prior weight; fitted by
    `ensgan stack` and recorded in the stacker's card."""
    st = ens.need_stacker("the weighted mixture")
    return _mixture(ens, n, rng, st.card.member_weights)


def _mixture(ens: Ensemble, n: int, rng: np.random.Generator, weights: dict[str, float]) -> Sample:
    names = list(ens.members)
    p = np.array([weights.get(m, 0.0) for m in names])
    which = rng.choice(len(names), size=n, p=p / p.sum())
    seeds = rng.integers(0, 2**31 - 1, size=n)
    images = None
    for k, name in enumerate(names):
        sel = np.flatnonzero(which == k)
        if len(sel) == 0:
            continue
        imgs = ens.member_sample(name, seeds[sel])
        if images is None:
            images = np.empty((n, *imgs.shape[1:]), dtype=imgs.dtype)
        images[sel] = imgs
    return Sample(images, [names[k] for k in which], seeds)


def mean(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """The pixel mean of every member's output for the same latent."""
    seeds = rng.integers(0, 2**31 - 1, size=n)
    return Sample(ens.pixel_mean(seeds), ["mean"] * n, seeds)


def vote(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """`vote_oversample` mixture candidates per image; the stacker's favourites are kept."""
    ens.need_stacker("the vote")
    cand = mixture(ens, n * ens.vote_oversample, rng)
    scores = ens.score(cand.images)
    keep = np.sort(np.argsort(-scores, kind="stable")[:n])
    stats = {"accept_rate": 1.0 / ens.vote_oversample, "ess": float(n)}
    return Sample(
        cand.images[keep], [cand.members[i] for i in keep], cand.seeds[keep], scores[keep], stats
    )


MAX_PROPOSALS_PER_IMAGE = 1000  # DRS gives up (a clear error) past this many proposals per image


def drs(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """Rejection sampling per member: each member keeps its mixture share of the n images, and
    accepts its proposals with probability min(1, r̂/M_k) (γ = 0), M_k from its burn-in; with
    a temperature T, min(1, (r̂/M_k)^T)."""
    st = ens.need_stacker("discriminator rejection sampling")
    names = list(ens.members)
    p = np.array([ens.weights.get(m, 0.0) for m in names])
    quota = rng.multinomial(n, p / p.sum())
    which = np.repeat(np.arange(len(names)), quota)
    rng.shuffle(which)  # the members' images interleaved, as a mixture draws them
    seeds, scores = np.empty(n, dtype=np.int64), np.empty(n)
    images: np.ndarray | None = None
    proposed, log_w = 0, []
    for k, name in enumerate(names):
        slots = np.flatnonzero(which == k)
        if len(slots) == 0:
            continue

        def propose(batch: int, name: str = name) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
            cand_seeds = rng.integers(0, 2**31 - 1, size=batch)
            cand = ens.member_sample(name, cand_seeds)
            p = ens.score(cand)  # P(real): the ratio, and the kept images' scores
            return (cand, cand_seeds, p), ens.drs_temperature * st.log_ratio_of(p)

        log_m = ens.drs_temperature * st.card.drs_log_m[name]  # M's percentile of r̂^T
        (kept, kept_seeds, kept_p), used, w = rejection_fill(
            len(slots), propose, log_m, ens.drs_gamma, rng,
            max_proposals=MAX_PROPOSALS_PER_IMAGE * len(slots), who=f"member {name}",
        )  # fmt: skip
        if images is None:
            images = np.empty((n, *kept.shape[1:]), dtype=kept.dtype)
        images[slots], seeds[slots], scores[slots] = kept, kept_seeds, kept_p
        proposed += used
        log_w.append(w)
    assert images is not None or n == 0
    stats = {"accept_rate": n / max(proposed, 1), "ess": kish_ess(np.concatenate(log_w or [[]]))}
    return Sample(images, [names[k] for k in which], seeds, scores, stats)


def mh(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """One independence-MH chain per image: starts at a held-out real image, `mh_chain`
    proposals from the mixture, α = min(1, r̂(x')/r̂(x)); the image is the final state."""
    st = ens.need_stacker("Metropolis-Hastings sampling")
    names = list(ens.members)
    k = ens.mh_chain
    lr = np.empty((n, k))
    member = np.empty((n, k), dtype=np.int64)
    seeds = np.empty((n, k), dtype=np.int64)
    for j in range(k):  # step j of every chain at once
        prop = mixture(ens, n, rng)
        lr[:, j] = ens.log_ratio(prop.images)
        member[:, j] = [names.index(m) for m in prop.members]
        seeds[:, j] = prop.seeds
    init = st.real_log_ratios[rng.integers(0, len(st.real_log_ratios), size=n)]
    cur, moves, restarted = mh_final_states(init, lr, rng)
    rows = np.arange(n)
    out_member, out_seeds = member[rows, cur], seeds[rows, cur]
    images: np.ndarray | None = None
    for m, name in enumerate(names):  # regenerate the chosen proposals from their latents
        sel = np.flatnonzero(out_member == m)
        if len(sel):
            imgs = ens.member_sample(name, out_seeds[sel])
            if images is None:
                images = np.empty((n, *imgs.shape[1:]), dtype=imgs.dtype)
            images[sel] = imgs
    stats = {
        "accept_rate": float(moves.sum() / (n * k)),
        "ess": kish_ess(lr.ravel()),
        "restarted_chains": float(restarted.mean()),
    }
    return Sample(images, [names[m] for m in out_member], out_seeds, stats=stats)
