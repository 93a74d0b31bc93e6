"""Many GANs of one benchmark table trained as one stacked model, so that a GPU runs each
step of all of them as a few large kernels instead of many tiny ones (the unbatched toy step
is launch-bound: a 4 x 400 MLP at batch 100).

The networks of every GAN are built as `train_gan` builds them (ensgan.gan.nets.build_nets,
the same seed, so the same initial weights), their parameters and buffers stacked
(`torch.func.stack_module_state`) and run under `torch.func.vmap` of `functional_call`; batch
norm keeps each GAN's own running statistics (its stacked buffers are updated in place under
vmap). Step t of GAN k draws its real batch and latents from `step_generator(seed_k, t)` in
the order the training loop draws them, then takes the loop's D step and G step (the G step
against the updated D, on the same fakes) with the pipeline's loss; Adam is elementwise, so
one Adam over the stacked tensors is each GAN's own Adam. What differs from the loop: no EMA
generator (the benchmark samples the raw one), and divergence (a non-finite loss) is found
once at the end rather than at its step: both end in DivergedError. The unbatched path
(`train_gan`, the training loop itself) stays the reference: tests/test_bench_batched.py
checks that both give the same GANs for the same seeds.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ensgan.bench.datasets import BenchDataset
from ensgan.bench.trial import TrainedGAN, Trial, _seed, split_budget
from ensgan.errors import DivergedError
from ensgan.gan.loop import step_generator
from ensgan.gan.losses import make_loss
from ensgan.gan.nets import build_nets
from ensgan.gan.samplers import RealSampler, UniformSampler, bootstrap_indices

SINGLE_ROWS = {"gan"}  # the rows that read trial.single()
MEMBER_ROWS = {"mixture", "drs", "mh", "weighted"}  # ... and trial.members()


@dataclass(frozen=True)
class Job:
    """One GAN to train: its name, its updates, its seed and where its real batches come from."""

    name: str
    steps: int
    seed: int
    sampler: RealSampler


def train_many(data: BenchDataset, real: Sequence[torch.Tensor], jobs: Sequence[Job]) -> list:
    """The GANs of `jobs` (job i on the real set `real[i]`, all on one device), trained
    stacked, a stack per number of steps; returned in the jobs' order."""
    out: dict[int, TrainedGAN] = {}
    for steps in sorted({j.steps for j in jobs}):
        group = [i for i, j in enumerate(jobs) if j.steps == steps]
        gans = _train_stack(data, [real[i] for i in group], [jobs[i] for i in group])
        out |= dict(zip(group, gans, strict=True))
    return [out[i] for i in range(len(jobs))]


def _train_stack(data: BenchDataset, real: list[torch.Tensor], jobs: list[Job]) -> list:
    loss = make_loss("non_saturating")
    device = real[0].device
    nets = [
        build_nets(lambda: data.build_pair(1), loss, seed=j.seed, lr_g=data.lr, lr_d=data.lr,
                   betas=data.betas, device=device)
        for j in jobs
    ]  # fmt: skip
    gs, ds = [n.generator for n in nets], [n.discriminator for n in nets]
    gp, gb = stack_module_state(gs)
    dp, db = stack_module_state(ds)
    opt_g = torch.optim.Adam(gp.values(), lr=data.lr, betas=data.betas)
    opt_d = torch.optim.Adam(dp.values(), lr=data.lr, betas=data.betas)
    g_net, d_net = copy.deepcopy(gs[0]).to("meta"), copy.deepcopy(ds[0]).to("meta")
    g = vmap(lambda p, b, z: functional_call(g_net, (p, b), (z,)))
    d = vmap(lambda p, b, x: functional_call(d_net, (p, b), (x,)))
    d_loss_of = vmap(lambda r, f: loss.d_loss([r], [f]))
    g_loss_of = vmap(lambda f: loss.g_loss([f]))
    finite = torch.ones(len(jobs), dtype=torch.bool, device=device)
    sets = list({id(r): r for r in real}.values())  # each real set once (trials share one)
    stacked = torch.stack(sets)
    which = torch.tensor([next(i for i, s in enumerate(sets) if s is r) for r in real])
    which, pin = which.to(device)[:, None], device.type == "cuda"
    t0 = time.perf_counter()
    for step in range(jobs[0].steps):
        idx, z = (t.to(device, non_blocking=True) for t in _draws(data, jobs, step, pin))
        x = stacked[which, idx]  # (K, batch, ...): one gather
        fake = g(gp, gb, z)
        d_loss = d_loss_of(d(dp, db, x), d(dp, db, fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.sum().backward()  # the GANs share no parameter: each gets its own gradient
        opt_d.step()
        g_loss = g_loss_of(d(dp, db, fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.sum().backward()
        opt_g.step()
        finite &= torch.isfinite(d_loss.detach()) & torch.isfinite(g_loss.detach())
    seconds = time.perf_counter() - t0
    for k in torch.nonzero(~finite).flatten().tolist():
        raise DivergedError(f"{jobs[k].name}: a loss went non-finite in {jobs[k].steps} steps")
    for k, (gk, dk) in enumerate(zip(gs, ds, strict=True)):
        gk.load_state_dict({n: t[k].detach() for n, t in (gp | gb).items()})
        dk.load_state_dict({n: t[k].detach() for n, t in (dp | db).items()})
    return [
        TrainedGAN(j.name, gk.eval(), dk.eval(), data, j.steps, seconds, loss)
        for j, gk, dk in zip(jobs, gs, ds, strict=True)
    ]


def _draws(
    data: BenchDataset, jobs: list[Job], step: int, pin: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s real-batch indices and latents of every GAN, stacked (pinned on the
    host for a GPU): each from its own step generator, in the training loop's order (the
    batch, then the latents)."""
    idx, zs = [], []
    for j in jobs:
        gen = step_generator(j.seed, step)
        idx.append(torch.as_tensor(np.asarray(j.sampler.draw(gen, data.batch_size))))
        zs.append(torch.randn(data.batch_size, data.z_dim, generator=gen))
    out = torch.stack(idx), torch.stack(zs)
    return (out[0].pin_memory(), out[1].pin_memory()) if pin else out


def prefetch(trials: Sequence[Trial], methods: Sequence[str]) -> None:
    """Train, stacked, every GAN the rows `methods` will ask the `trials` (of one dataset)
    for: each trial's single GAN and its K members, as `Trial.single()` and `Trial.members()`
    would train them (the same names, seeds, samplers and updates), adopted by the trials.
    Rows that train GANs of their own (boosting, GMAN) still train them unbatched."""
    jobs, real, keys = [], [], []
    for trial in trials:
        name = f"{trial.data.name}/trial-{trial.index}"
        if SINGLE_ROWS & set(methods) and not trial.has("single"):
            everything = UniformSampler(np.arange(len(trial.real)))
            jobs.append(Job(f"{name}/gan", trial.budget, _seed(trial.seed, "single"), everything))
            real.append(trial.real_tensor())
            keys.append((trial, "single"))
        if MEMBER_ROWS & set(methods) and not trial.has("members"):
            for i, steps in enumerate(split_budget(trial.budget, trial.k)):
                seed = _seed(trial.seed, "member", i)
                pool = UniformSampler(bootstrap_indices(len(trial.real), seed, bootstrap=True))
                jobs.append(Job(f"{name}/member-{i}", steps, seed, pool))
                real.append(trial.real_tensor())
                keys.append((trial, "members"))
    if not jobs:
        return
    trained: dict[tuple[int, str], list[TrainedGAN]] = {}
    for (trial, key), gan in zip(keys, train_many(trials[0].data, real, jobs), strict=True):
        trained.setdefault((id(trial), key), []).append(gan)
    for trial in trials:
        for key in ("single", "members"):
            gans = trained.get((id(trial), key))
            if gans:
                value = gans[0] if key == "single" else gans
                trial.adopt(key, value, sum(g.steps for g in gans))
