"""One dataset x one trial of `ensgan bench modes`: its training set, the GANs its rows train,
and the ensembles they sample, built from the pipeline's own parts.

A GAN trained here (`TrainedGAN`) has the shape of ensgan.ensemble.members.Member, so every
row samples through ensgan.ensemble.combinations.Ensemble, exactly as `ensgan generate` does,
and the stacker behind drs, mh and weighted is fitted by the `stack` stage's own function
(ensgan.pipeline.stack.fit_ensemble_stacker), under the trial's `stack`, `combine` and `train`
params sections (the pipeline's defaults unless `ensgan bench modes --params` names one).
Training is cached on the trial, so rows that only combine the same K members share them:

- `trial.single()`: one GAN trained for the whole budget (the plain GAN row);
- `trial.members()`: K GANs, member i on its own bootstrap resample of the training set with
  its own seed, for budget / K updates each (the remainder spread over the first ones);
- `trial.stacked()`: those members' ensemble with its fitted stacker (drs, mh, weighted);
- `trial.train(steps, seed, ...)`: anything else (boosting rounds, GMAN), counted against the
  budget by the row itself; `trial.cached(key, make)`: anything else the rows share.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ensgan.bench.datasets import BenchDataset
from ensgan.config import CombineConfig, StackConfig, TrainConfig
from ensgan.ensemble.combinations import Ensemble
from ensgan.gan.loop import training_loop
from ensgan.gan.losses import GANLoss, make_loss
from ensgan.gan.models import discriminator_list, discriminator_outputs
from ensgan.gan.nets import build_nets
from ensgan.gan.samplers import RealSampler, UniformSampler, bootstrap_indices
from ensgan.pipeline.common import sampling_knobs
from ensgan.pipeline.stack import fit_ensemble_stacker

STACK_REAL = 2500  # fresh real draws standing in for each of the `stack` and `calibrate` splits


@dataclass
class TrainedGAN:
    """One trained generator (sampled in eval mode: batch norm uses its running statistics)
    and its discriminator; an ensgan.ensemble.members.Member over the dataset's format."""

    name: str
    generator: nn.Module
    discriminator: nn.Module  # a MultiDiscriminator for several (GMAN)
    data: BenchDataset
    steps: int
    seconds: float
    loss: GANLoss | None = None  # what it was trained with (GMAN*: holds the learned λ)

    @property
    def z_dim(self) -> int:
        return self.data.z_dim

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def discriminators(self) -> list[nn.Module]:
        return discriminator_list(self.discriminator)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """The raw output for latents z (points, or images in [-1, 1]), on the CPU. Unlike a
        pipeline member's, non-finite output is kept: it scores as no mode at all."""
        self.generator.eval()
        parts = [
            self.generator(z[i : i + batch].to(self.device)).cpu() for i in range(0, len(z), batch)
        ]
        return torch.cat(parts) if parts else torch.empty(0, 0)

    def to_samples(self, x: torch.Tensor) -> np.ndarray:
        return self.data.to_samples(x)

    def logits(self, samples: np.ndarray) -> np.ndarray:
        return self._outputs(samples, hidden=False)[1]

    def hidden_and_logits(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._outputs(samples, hidden=True)

    def _outputs(self, samples: np.ndarray, hidden: bool) -> tuple[np.ndarray, np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(samples))
        d = self.discriminator.eval()
        return discriminator_outputs(d, t, self.data.to_input, self.device, hidden=hidden)


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
    builder and loop (ensgan.gan.nets, ensgan.gan.loop): Adam with the dataset's settings, the
    non-saturating loss unless `loss` is given, real batches from `sampler` (uniform over
    `real` by default). The loop's EMA generator is kept but not used: PacGAN samples the raw
    generator. Trains on `real`'s device."""
    if steps < 1:
        raise ValueError(f"{name}: a GAN needs at least one step, got {steps}")
    loss = make_loss("non_saturating") if loss is None else loss
    nets = build_nets(
        lambda: data.build_pair(n_discriminators), loss, seed=seed,
        lr_g=data.lr, lr_d=data.lr, betas=data.betas, device=real.device,
    )  # fmt: skip
    t0 = time.perf_counter()
    training_loop(
        name=name,
        generator=nets.generator,
        generator_ema=nets.generator_ema,
        discriminators=nets.discriminators,
        opt_g=nets.opt_g,
        opt_d=nets.opt_d,
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
    g, d = nets.generator.eval(), nets.discriminator.eval()
    return TrainedGAN(name, g, d, data, steps, seconds, loss)


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
    stack: StackConfig = field(default_factory=StackConfig)  # the stacker, as `ensgan stack`
    combine: CombineConfig = field(default_factory=CombineConfig)  # how the rows sample
    train_params: TrainConfig = field(default_factory=TrainConfig)  # its boosting_* only
    real: np.ndarray = field(init=False, repr=False)
    steps_trained: int = field(default=0, init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)
    _adopted: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_samples is None:
            self.n_samples = self.data.n_eval
        self.real = self.data.make_real(
            self.data.train_size, np.random.default_rng(_seed(self.seed, "data"))
        )

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator for one row's own draws, the same whichever rows run before it."""
        return np.random.default_rng(_seed(self.seed, purpose))

    def int_seed(self, purpose: str) -> int:
        """A seed below 2^31 (scikit-learn's and the combinations' limit) for one purpose."""
        return int(self.rng(purpose).integers(2**31 - 1))

    def real_tensor(self) -> torch.Tensor:
        if "real" not in self._cache:
            self._cache["real"] = self.data.to_train(self.real).to(self.device)
        return self._cache["real"]

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """What `make()` returns, made once per trial and shared by every row that asks (or
        what was adopted for `key`, its updates counted against the row that first asks)."""
        if key not in self._cache:
            if key in self._adopted:
                self._cache[key], steps = self._adopted.pop(key)
                self.steps_trained += steps
            else:
                self._cache[key] = make()
        return self._cache[key]

    def adopt(self, key: str, value: object, steps: int) -> None:
        """Hand the trial what `cached(key, ...)` would have made, trained elsewhere
        (ensgan.bench.batched: stacked with other trials' GANs) for `steps` updates."""
        self._adopted[key] = (value, steps)

    def has(self, key: str) -> bool:
        return key in self._cache or key in self._adopted

    def train(self, steps: int, seed: int, *, label: str, **kwargs) -> TrainedGAN:
        """A GAN trained now (not cached) for `steps` updates; kwargs go to train_gan."""
        name = f"{self.data.name}/trial-{self.index}/{label}"
        out = train_gan(self.data, self.real_tensor(), name=name, steps=steps, seed=seed, **kwargs)
        self.steps_trained += steps
        return out

    def single(self) -> TrainedGAN:
        """One GAN trained on the whole training set for the whole budget (cached)."""
        return self.cached(
            "single", lambda: self.train(self.budget, _seed(self.seed, "single"), label="gan")
        )

    def members(self) -> list[TrainedGAN]:
        """K members, each on its own bootstrap resample, budget / K updates each (cached)."""

        def make() -> list[TrainedGAN]:
            out = []
            for i, steps in enumerate(split_budget(self.budget, self.k)):
                seed = _seed(self.seed, "member", i)
                pool = bootstrap_indices(len(self.real), seed, bootstrap=True)
                out.append(
                    self.train(steps, seed, label=f"member-{i}", sampler=UniformSampler(pool))
                )
            return out

        return self.cached("members", make)

    def ensemble_of(
        self, members: Sequence[TrainedGAN], weights: Sequence[float] | None = None
    ) -> Ensemble:
        """The pipeline's Ensemble over `members` (uniform unless `weights`), sampling as the
        trial's `combine` and `stack` sections say."""
        names = [m.name for m in members]
        w = {} if weights is None else dict(zip(names, map(float, weights), strict=True))
        knobs = sampling_knobs(self.combine, self.stack)
        return Ensemble({m.name: m for m in members}, weights=w, **knobs)

    def stacker_reals(self) -> tuple[np.ndarray, np.ndarray]:
        """Fresh real draws in place of the `stack` and `calibrate` splits: new points of the
        2-D mixtures (an infinite source), new triples of the same digits for stacked digits
        (whose 1,797 digits have none held out)."""
        return tuple(
            self.data.make_real(STACK_REAL, self.rng(f"stacker/{split}"))
            for split in ("fit", "calibrate")
        )

    def stacked(self) -> Ensemble:
        """The members' ensemble with a stacker fitted, calibrated and burnt in by the `stack`
        stage's function under the trial's sections (cached: drs, mh and weighted share it)."""

        def make() -> Ensemble:
            ens = self.ensemble_of(self.members())
            fit_ensemble_stacker(ens, *self.stacker_reals(), self.stack)
            return ens

        return self.cached("stacked", make)
