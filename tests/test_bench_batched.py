"""The benchmark's batched path (ensgan/bench/batched.py): GANs trained as one stacked model
are the GANs the training loop trains from the same seeds, draws and updates; the trials get
them as their rows would have trained them; a non-finite loss still ends in DivergedError.

The same numbers hold for a few steps only: after tens of steps the two paths part, as any two
orders of float operations do under Adam (a rounding-sized gradient near zero can flip sign,
and Adam turns it into a full-sized step), so the comparison is made at 3 steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ensgan.bench.batched import Job, prefetch, train_many
from ensgan.bench.datasets import DATASETS
from ensgan.bench.modes import resolve, run
from ensgan.bench.trial import Trial, train_gan
from ensgan.errors import DivergedError
from ensgan.gan.samplers import UniformSampler, bootstrap_indices

RING = DATASETS["ring"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _close(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(sa[k], sb[k]), k  # batch norm's num_batches_tracked


def test_stacked_gans_are_the_loops_gans() -> None:
    """Three GANs (two seeds, a bootstrap, two real sets, two step counts: two stacks)
    against train_gan, which runs the pipeline's training loop."""
    rng = np.random.default_rng(0)
    reals = [RING.to_train(RING.make_real(500, rng)) for _ in range(2)]
    boot = bootstrap_indices(500, 5, bootstrap=True)
    jobs = [
        Job("a", 3, 11, UniformSampler(np.arange(500))),
        Job("b", 3, 12, UniformSampler(boot)),
        Job("c", 2, 13, UniformSampler(np.arange(500))),
    ]
    stacked = train_many(RING, [reals[0], reals[1], reals[0]], jobs)
    for job, real, got in zip(jobs, [reals[0], reals[1], reals[0]], stacked, strict=True):
        ref = train_gan(RING, real, name=job.name, steps=job.steps, seed=job.seed,
                        sampler=job.sampler)  # fmt: skip
        assert (got.name, got.steps) == (job.name, job.steps)
        _close(got.generator, ref.generator)
        _close(got.discriminator, ref.discriminator)
        assert not got.generator.training  # sampled in eval mode, as train_gan's
    a, b = (s.generator.state_dict()["main.0.weight"] for s in stacked[:2])
    assert not torch.equal(a, b)  # each GAN its own


def test_a_non_finite_loss_is_divergence() -> None:
    real = RING.to_train(RING.make_real(200, np.random.default_rng(1)))
    bad = real.clone()
    bad[:] = float("nan")
    jobs = [Job("ok", 2, 1, UniformSampler(np.arange(200))),
            Job("bad", 2, 2, UniformSampler(np.arange(200)))]  # fmt: skip
    with pytest.raises(DivergedError, match="bad: a loss went non-finite"):
        train_many(RING, [real, bad], jobs)


def test_trials_adopt_what_their_rows_would_train() -> None:
    trials = [Trial(RING, t, seed=t, budget=7, k=3) for t in (1, 2)]
    prefetch(trials, ["gan", "mixture"])
    assert [t.steps_trained for t in trials] == [0, 0]  # counted when a row asks
    for t in trials:
        single, members = t.single(), t.members()
        assert single.name == f"ring/trial-{t.index}/gan" and single.steps == 7
        assert [m.steps for m in members] == [3, 2, 2]
        assert [m.name for m in members] == [f"ring/trial-{t.index}/member-{i}" for i in range(3)]
        assert t.steps_trained == 14
    ref = Trial(RING, 1, seed=1, budget=7, k=3)
    _close(trials[0].members()[1].generator, ref.members()[1].generator)


def test_bench_modes_batched_runs_and_says_so(tmp_path: Path) -> None:
    settings = resolve("ring", 2, steps=6, k=2, methods=["gan", "mixture"], batched=True)
    results = run(settings, tmp_path / "out", log=lambda line: None)
    assert set(results.steps_trained) == {6}  # each row its whole budget
    card = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert card["batched"] is True and card["seconds_batched_training"]["ring"] > 0
    assert "trained stacked" in (tmp_path / "out" / "table.md").read_text()
    assert resolve("ring", 1).batched is False and resolve("ring", 1, device="cuda").batched
