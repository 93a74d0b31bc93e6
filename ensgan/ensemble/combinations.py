"""Combining members: generator mixture, pixel mean, and a stacked discriminator vote.

- mixture: each image comes from one member, drawn with the mixture weights;
- mean: the pixel mean of every member's output for the same latent (the combination the
  original ensemble-GAN write-up proposes);
- vote: `vote_oversample` candidates per image are drawn from the mixture, and the ones the
  stacked discriminator ensemble rates most real are kept.
Every image carries its latent seed, so any single image can be regenerated from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ensgan.ensemble.stacking import prob_real
from ensgan.gan.loaded import LoadedMember
from ensgan.gan.models import to_uint8
from ensgan.registry import COMBINATIONS

METHODS = tuple(COMBINATIONS)  # every combination, in the registry's order


def latents(seeds: np.ndarray, z_dim: int) -> torch.Tensor:
    """One standard-normal latent per seed, the same on every machine."""
    out = torch.empty(len(seeds), z_dim)
    for i, s in enumerate(seeds):
        out[i] = torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s)))
    return out


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
    images: np.ndarray  # uint8 (N, C, H, W)
    members: list[str]  # the member each image came from ("mean" for pixel means)
    seeds: np.ndarray  # int64 latent seed per image
    scores: np.ndarray | None = None  # stacker P(real) per image, when a stacker is present

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
    members: dict[str, LoadedMember]
    weights: dict[str, float] = field(default_factory=dict)  # normalised; uniform when empty
    stacker: object | None = None  # a fitted scikit-learn classifier over member logits
    vote_oversample: int = 4

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
        """(N, K) discriminator logits, one column per member in `members` order."""
        t = torch.from_numpy(images)
        return np.stack([m.score(t) for m in self.members.values()], axis=1)

    def score(self, images: np.ndarray) -> np.ndarray | None:
        if self.stacker is None:
            return None
        return prob_real(self.stacker, self.features(images))

    # Sampling.

    def member_sample(self, name: str, seeds: np.ndarray) -> np.ndarray:
        return self.members[name].generate_u8(latents(seeds, self.z_dim)).numpy()

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
        return out


def mixture(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """Each image from one member, drawn with the mixture weights."""
    names = list(ens.members)
    p = np.array([ens.weights.get(m, 0.0) for m in names])
    which = rng.choice(len(names), size=n, p=p / p.sum())
    seeds = rng.integers(0, 2**31 - 1, size=n)
    images = None
    for k, name in enumerate(names):
        sel = np.flatnonzero(which == k)
        if len(sel) == 0:
            continue
        imgs = ens.member_sample(name, seeds[sel])
        if images is None:
            images = np.empty((n, *imgs.shape[1:]), dtype=np.uint8)
        images[sel] = imgs
    return Sample(images, [names[k] for k in which], seeds)


def mean(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """The pixel mean of every member's output for the same latent."""
    seeds = rng.integers(0, 2**31 - 1, size=n)
    z = latents(seeds, ens.z_dim)
    total = None
    for m in ens.members.values():
        x = m.generate(z)
        total = x if total is None else total + x
    images = to_uint8(total / len(ens.members)).numpy()
    return Sample(images, ["mean"] * n, seeds)


def vote(ens: Ensemble, n: int, rng: np.random.Generator) -> Sample:
    """`vote_oversample` mixture candidates per image; the stacker's favourites are kept."""
    if ens.stacker is None:
        raise ValueError("the vote needs a fitted stacker: run `ensgan stack` first")
    cand = mixture(ens, n * ens.vote_oversample, rng)
    scores = ens.score(cand.images)
    keep = np.sort(np.argsort(-scores, kind="stable")[:n])
    return Sample(
        cand.images[keep], [cand.members[i] for i in keep], cand.seeds[keep], scores[keep]
    )
