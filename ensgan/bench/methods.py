"""The benchmark's rows: METHODS maps a row's name to a callable(trial) -> samples.

Every row of one dataset and trial gets the same `Trial`: the dataset, the trial's seed, its
training set, and the budget (total generator updates, the same for every row). A row returns
`trial.n_samples` samples in the dataset's format (float32 (N, 2) points, or uint8 (N, 3, H, W)
images). Training is cached on the trial, so rows that only combine the same K members
(mixture, and later drs, mh, weighted, mean, vote) share them instead of retraining:

- `trial.single()`: one GAN trained for the whole budget (the plain GAN row);
- `trial.members()`: K GANs, member i on its own bootstrap resample of the training set with
  its own seed, for budget / K updates each (the remainder spread over the first ones);
- `trial.train(steps, seed, ...)`: anything else (boosting rounds with a WeightedSampler,
  GMAN with several discriminators), counted against the budget by the row itself;
- `trial.cached(key, make)`: anything else the rows share (the density-ratio stacker that
  drs, mh and weighted sample by, ensgan.bench.ensemble_rows).

Adding a row is one entry in METHODS (bottom of this file), e.g. `"weighted": weighted` with
`def weighted(trial): ...` using `trial.members()` and `trial.rng("weighted")`. The rows beyond
gan and mixture live in ensgan.bench.ensemble_rows.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ensgan.bench import ensemble_rows  # imports this module only inside its functions
from ensgan.bench.datasets import BenchDataset
from ensgan.gan.loop import training_loop
from ensgan.gan.losses import GANLoss, make_loss
from ensgan.gan.samplers import RealSampler, UniformSampler, bootstrap_indices


@dataclass
class TrainedGAN:
    """One trained generator (sampled in eval mode: batch norm uses its running statistics)
    and its discriminators."""

    name: str
    generator: nn.Module
    discriminators: list[nn.Module]
    data: BenchDataset
    steps: int
    seconds: float
    loss: GANLoss | None = None  # what it was trained with (GMAN*: holds the learned λ)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """The raw output for latents z (points, or images in [-1, 1]), on the CPU."""
        self.generator.eval()
        parts = [
            self.generator(z[i : i + batch].to(self.device)).cpu() for i in range(0, len(z), batch)
        ]
        return torch.cat(parts)

    def latents(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        return torch.randn(n, self.data.z_dim, generator=gen)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n samples in the dataset's stored format."""
        return self.data.to_samples(self.generate(self.latents(n, rng)))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_discriminators) logits for raw inputs (points, or images in [-1, 1])."""
        for d in self.discriminators:
            d.eval()
        x = x.to(self.device)
        return torch.stack([d(x) for d in self.discriminators], dim=1).cpu()


def train_gan(
    data: BenchDataset,
    real: torch.Tensor,
    *,
    name: str,
    steps: int,
    seed: int,
    sampler: RealSampler | None = None,
    loss: GANLoss | None = None,
    n_discriminators: int = 1,
) -> TrainedGAN:
    """Train one GAN of `data`'s architecture for `steps` generator updates with the package's
    loop (ensgan.gan.loop.training_loop): Adam with the dataset's settings, the non-saturating
    loss unless `loss` is given, real batches from `sampler` (uniform over `real` by default).
    A loss with parameters (GMAN*'s θ) is trained by the generator's optimiser, as
    ensgan.gan.member does. The loop's EMA generator is kept but not used: PacGAN samples the
    raw generator. Trains on `real`'s device."""
    if steps < 1:
        raise ValueError(f"{name}: a GAN needs at least one step, got {steps}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g, d = data.build_pair()
        ds = [d] + [data.build_pair()[1] for _ in range(n_discriminators - 1)]
    g = g.to(real.device)
    ds = [d.to(real.device) for d in ds]
    loss = make_loss("non_saturating") if loss is None else loss
    loss_params = []  # GMAN*'s θ: learned with the generator
    if isinstance(loss, nn.Module):
        loss.to(real.device)
        loss_params = list(loss.parameters())
    opt_g = torch.optim.Adam([*g.parameters(), *loss_params], lr=data.lr, betas=data.betas)
    opt_d = torch.optim.Adam([p for d in ds for p in d.parameters()], lr=data.lr, betas=data.betas)
    t0 = time.perf_counter()
    training_loop(
        name=name,
        generator=g,
        generator_ema=copy.deepcopy(g),
        discriminators=ds,
        opt_g=opt_g,
        opt_d=opt_d,
        loss=loss,
        sampler=sampler or UniformSampler(np.arange(len(real))),
        real_images=real,
        seed=seed,
        start_step=0,
        total_steps=steps,
        batch_size=data.batch_size,
        z_dim=data.z_dim,
        ema_halflife_images=data.batch_size,
        max_loss=math.inf,
        log_every=steps,
        checkpoint_every=steps,
        log_row=lambda row: None,
        on_checkpoint=lambda step: None,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    return TrainedGAN(name, g.eval(), [x.eval() for x in ds], data, steps, seconds, loss)


def split_budget(budget: int, k: int) -> list[int]:
    """k step counts that add up to `budget` exactly, as even as can be."""
    if k < 1 or budget < k:
        raise ValueError(f"a budget of {budget} updates cannot train {k} members")
    return [budget // k + (i < budget % k) for i in range(k)]


T = TypeVar("T")


def _seed(*parts: object) -> int:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:7], "little")


@dataclass
class Trial:
    """One dataset x one trial: what every row gets, and the training the rows share."""

    data: BenchDataset
    index: int  # 1-based trial number
    seed: int
    budget: int  # total generator updates for every row
    k: int = 5  # ensemble size
    n_samples: int | None = None  # default: data.n_eval
    device: str = "cpu"  # where the GANs train
    real: np.ndarray = field(init=False, repr=False)
    steps_trained: int = field(default=0, init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_samples is None:
            self.n_samples = self.data.n_eval
        self.real = self.data.make_real(
            self.data.train_size, np.random.default_rng(_seed(self.seed, "data"))
        )

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator for one row's own draws, the same whichever rows run before it."""
        return np.random.default_rng(_seed(self.seed, purpose))

    def real_tensor(self) -> torch.Tensor:
        if "real" not in self._cache:
            self._cache["real"] = self.data.to_train(self.real).to(self.device)
        return self._cache["real"]

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """What `make()` returns, made once per trial and shared by every row that asks."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def train(self, steps: int, seed: int, *, label: str, **kwargs) -> TrainedGAN:
        """A GAN trained now (not cached) for `steps` updates; kwargs go to train_gan."""
        name = f"{self.data.name}/trial-{self.index}/{label}"
        out = train_gan(self.data, self.real_tensor(), name=name, steps=steps, seed=seed, **kwargs)
        self.steps_trained += steps
        return out

    def single(self) -> TrainedGAN:
        """One GAN trained on the whole training set for the whole budget (cached)."""
        if "single" not in self._cache:
            self._cache["single"] = self.train(self.budget, _seed(self.seed, "single"), label="gan")
        return self._cache["single"]

    def members(self) -> list[TrainedGAN]:
        """K members, each on its own bootstrap resample, budget / K updates each (cached)."""
        if "members" not in self._cache:
            n = len(self.real)
            out = []
            for i, steps in enumerate(split_budget(self.budget, self.k)):
                seed = _seed(self.seed, "member", i)
                pool = bootstrap_indices(n, seed, bootstrap=True)
                out.append(
                    self.train(steps, seed, label=f"member-{i}", sampler=UniformSampler(pool))
                )
            self._cache["members"] = out
        return self._cache["members"]


def mixture_sample(
    members: list[TrainedGAN],
    n: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """n samples, each from one member drawn with `weights` (uniform by default)."""
    p = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights)
    which = rng.choice(len(members), size=n, p=p / p.sum())
    out = None
    for k, member in enumerate(members):
        sel = np.flatnonzero(which == k)
        if len(sel) == 0:
            continue
        part = member.sample(len(sel), rng)
        if out is None:
            out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
        out[sel] = part
    assert out is not None
    return out


# The rows. Each takes the trial and returns trial.n_samples samples.


def gan(trial: Trial) -> np.ndarray:
    """The plain GAN: one generator, the whole budget."""
    return trial.single().sample(trial.n_samples, trial.rng("gan"))


def mixture(trial: Trial) -> np.ndarray:
    """K members on budget / K each, every sample from one member drawn uniformly."""
    return mixture_sample(trial.members(), trial.n_samples, trial.rng("mixture"))


Method = Callable[[Trial], np.ndarray]

METHODS: dict[str, Method] = {
    "gan": gan,
    "mixture": mixture,
    "drs": ensemble_rows.drs,
    "mh": ensemble_rows.mh,
    "weighted": ensemble_rows.weighted,
    "boosting": ensemble_rows.boosting,
    "gman": ensemble_rows.gman,
}
