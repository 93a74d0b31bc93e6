"""Combining members (mixture, mean, vote) with members whose outputs are known, untrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ensgan.ensemble.combinations import METHODS, Ensemble, Sample, collapse, latents
from ensgan.ensemble.stacking import Stacker, ratio_features
from ensgan.errors import OutputError, StackerError
from ensgan.gan.loaded import LoadedMember
from ensgan.gan.models import build_pair, to_uint8
from ensgan.io.cards import StackerCard
from tests.helpers import ConstGen, MeanStacker, Z, const_members, member


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: tiny networks gain nothing from more, and the CPU may be busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fitted_stacker(est, members: list[str]) -> Stacker:
    """A real Stacker around `est` (fitted on ratio_features of uniform weights)."""
    k = len(members)
    card = StackerCard(
        model="logistic", cv_folds=2, cv_roc_auc=1.0, cv_roc_auc_std=0.0, cv_accuracy=1.0,
        cv_log_loss=0.0, n_real=1, n_fake=1, members=members,
        mixture_weights={m: 1 / k for m in members}, calibration="sigmoid",
        calibration_roc_auc=1.0, ece_raw=0.0, ece_calibrated=0.0, brier_raw=0.0,
        brier_calibrated=0.0, n_calibrate_real=1, n_calibrate_fake=1, log_prior_ratio=0.0,
        burn_in=10, drs_log_m={m: 0.0 for m in members}, member_weights={m: 1 / k for m in members},
        data_sha256="0" * 64, member_fingerprints={}, member_weights_sha256={}, settings={},
    )  # fmt: skip
    return Stacker(est, card, np.zeros(3))


@pytest.fixture(scope="module")
def net_members() -> dict[str, LoadedMember]:
    """Two untrained but real generator/discriminator pairs, generators in eval mode."""
    out = {}
    for i, arch in enumerate(("dcgan", "mlp")):
        torch.manual_seed(i)
        g, d = build_pair(arch, z_dim=Z, size=8, channels=1, width=4)
        out[arch] = member(arch, g, d)
    return out


# Mixture.


def test_mixture_images_come_from_the_labelled_member() -> None:
    s = Ensemble(const_members()).sample("mixture", 200, seed=0)
    assert s.images.shape == (200, 1, 8, 8) and s.images.dtype == np.uint8
    assert len(s.members) == len(s.seeds) == 200
    assert s.scores is None
    labels = np.array(s.members)
    assert set(labels) == {"A", "B"}
    assert (s.images[labels == "A"] == 0).all()
    assert (s.images[labels == "B"] == 255).all()
    assert 0.35 < (labels == "A").mean() < 0.65  # uniform weights by default


def test_mixture_weights() -> None:
    only_a = Ensemble(const_members(), weights={"A": 1.0, "B": 0.0}).sample("mixture", 100, 0)
    assert only_a.members == ["A"] * 100
    assert (only_a.images == 0).all()
    for weights in ({"A": 0.8, "B": 0.2}, {"A": 4.0, "B": 1.0}):  # normalised either way
        s = Ensemble(const_members(), weights=weights).sample("mixture", 2000, seed=1)
        frac_a = np.mean(np.array(s.members) == "A")
        assert 0.76 < frac_a < 0.84, (weights, frac_a)
        assert (s.images[np.array(s.members) == "A"] == 0).all()


def test_mixture_images_regenerate_from_member_and_seed(net_members) -> None:
    ens = Ensemble(net_members)
    s = ens.sample("mixture", 24, seed=3)
    assert set(s.members) == set(net_members)
    for i, row in enumerate(s.rows()):
        again = ens.member_sample(row["member"], np.array([row["seed"]]))[0]
        # Batch of 1 versus a batch of many: allow one grey level of float rounding.
        assert np.abs(again.astype(int) - s.images[i].astype(int)).max() <= 1


# Mean.


def test_mean_of_constant_members_is_the_midpoint() -> None:
    s = Ensemble(const_members()).sample("mean", 10, seed=0)
    expected = int(to_uint8(torch.tensor(0.0)))
    assert expected in (127, 128)
    assert (s.images == expected).all()
    assert s.members == ["mean"] * 10
    assert s.images.shape == (10, 1, 8, 8) and s.images.dtype == np.uint8

    uneven = {"A": member("A", ConstGen(-0.5)), "B": member("B", ConstGen(0.3))}
    s = Ensemble(uneven).sample("mean", 5, seed=0)
    expected = int(to_uint8((torch.tensor(-0.5) + torch.tensor(0.3)) / 2))
    assert (s.images == expected).all()


def test_mean_is_the_pixel_mean_for_each_latent(net_members) -> None:
    s = Ensemble(net_members).sample("mean", 12, seed=2)
    z = latents(s.seeds, Z)
    with torch.no_grad():
        outs = [m.generator(z) for m in net_members.values()]
    expected = to_uint8(sum(outs) / len(outs)).numpy()
    assert np.abs(expected.astype(int) - s.images.astype(int)).max() <= 1


# Vote.


def test_vote_keeps_the_images_the_stacker_rates_real() -> None:
    ens = Ensemble(const_members(), stacker=MeanStacker(), vote_oversample=4)
    s = ens.sample("vote", 50, seed=0)
    # 200 candidates, about 100 from B: enough for B to fill all 50 places.
    assert s.members == ["B"] * 50
    assert (s.images == 255).all()
    assert s.scores is not None and s.scores.shape == (50,)
    np.testing.assert_allclose(s.scores, 1 / (1 + np.exp(-1.0)))


def test_vote_with_a_fitted_logistic_regression() -> None:
    members = const_members(spread=0.4)
    ens = Ensemble(members)
    a = ens.member_sample("A", np.arange(100))
    b = ens.member_sample("B", np.arange(100, 200))
    x = ratio_features(np.vstack([ens.features(b), ens.features(a)]), np.array([0.5, 0.5]))
    y = np.r_[np.ones(100, dtype=int), np.zeros(100, dtype=int)]
    est = LogisticRegression().fit(x, y)  # B's images count as "real"
    ens.stacker = fitted_stacker(est, ["A", "B"])
    s = ens.sample("vote", 30, seed=7)
    assert s.members == ["B"] * 30
    assert (s.images >= 128).all()
    feats = ratio_features(ens.features(s.images), np.array([0.5, 0.5]))
    np.testing.assert_allclose(s.scores, est.predict_proba(feats)[:, 1])


@pytest.mark.parametrize("weights", [None, {"A": 0.9, "B": 0.1}])
def test_vote_selection_is_consistent_with_scores(weights) -> None:
    ens = Ensemble(
        const_members(spread=0.4), weights=weights or {}, stacker=MeanStacker(), vote_oversample=4
    )
    n, seed = 40, 11
    s = ens.sample("vote", n, seed)
    # The candidates are the mixture sample of n * oversample images for the same seed.
    cand = ens.sample("mixture", n * 4, seed)
    assert len(set(cand.seeds.tolist())) == len(cand.seeds)
    pos = {int(sd): i for i, sd in enumerate(cand.seeds)}
    kept = np.array([pos[int(sd)] for sd in s.seeds])
    assert (np.diff(kept) > 0).all()  # kept in candidate order
    np.testing.assert_array_equal(s.images, cand.images[kept])
    assert s.members == [cand.members[i] for i in kept]
    np.testing.assert_allclose(s.scores, cand.scores[kept])
    np.testing.assert_allclose(s.scores, ens.score(s.images))
    dropped = np.setdiff1d(np.arange(len(cand.seeds)), kept)
    assert len(kept) == n and len(dropped) == 3 * n
    assert s.scores.min() >= cand.scores[dropped].max()
    # Every B candidate outranks every A candidate: all B kept, then the brightest A's.
    n_b = cand.members.count("B")
    assert s.members.count("B") == min(n_b, n)
    if weights:
        assert n_b < n and s.members.count("A") == n - n_b


def test_vote_needs_a_stacker_and_methods_are_checked() -> None:
    ens = Ensemble(const_members())
    for method in ("vote", "drs", "mh", "weighted"):
        with pytest.raises(StackerError, match="needs a fitted stacker"):
            ens.sample(method, 4, seed=0)
    with pytest.raises(ValueError, match="unknown combination method"):
        ens.sample("median", 4, seed=0)
    assert METHODS == ("mixture", "mean", "vote", "drs", "mh", "weighted")


def test_scores_are_attached_when_a_stacker_is_present(net_members) -> None:
    ens = Ensemble(net_members, stacker=MeanStacker())
    for method in ("mixture", "mean"):
        s = ens.sample(method, 6, seed=0)
        assert s.scores is not None and s.scores.shape == (6,)
        np.testing.assert_allclose(s.scores, ens.score(s.images))
    feats = ens.features(s.images)
    assert feats.shape == (6, 2)
    np.testing.assert_array_equal(feats[:, 1], net_members["mlp"].score(torch.from_numpy(s.images)))


# Determinism and the manifest.


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_sample(net_members, method: str) -> None:
    ens = Ensemble(net_members, stacker=MeanStacker())
    s1, s2, other = (ens.sample(method, 8, seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(s1.images, s2.images)
    np.testing.assert_array_equal(s1.seeds, s2.seeds)
    assert s1.members == s2.members
    np.testing.assert_array_equal(s1.scores, s2.scores)
    assert s1.seeds.dtype == np.int64
    assert not np.array_equal(s1.seeds, other.seeds)
    assert not np.array_equal(s1.images, other.images)


@pytest.mark.parametrize("method", METHODS)
def test_every_combinations_scores_are_the_stackers_on_its_images(net_members, method) -> None:
    """Whether a combination scored its images itself (vote, DRS: the scores it selected
    by) or had them scored after, each image's score is the stacker's P(real) of it."""
    ens = Ensemble(net_members, stacker=MeanStacker())
    s = ens.sample(method, 40, seed=3)
    np.testing.assert_allclose(s.scores, ens.score(s.images), rtol=1e-12)


def test_latents_depend_only_on_the_seed() -> None:
    z = latents(np.array([5, 7, 5, 123456789]), Z)
    assert z.shape == (4, Z) and z.dtype == torch.float32
    torch.testing.assert_close(z[0], z[2], rtol=0, atol=0)
    assert not torch.equal(z[0], z[1])
    torch.testing.assert_close(latents(np.array([7]), Z)[0], z[1], rtol=0, atol=0)
    torch.testing.assert_close(latents(np.array([123456789, 5]), Z), z[[3, 0]], rtol=0, atol=0)
    assert latents(np.array([], dtype=np.int64), Z).shape == (0, Z)


def test_rows_carry_member_seed_and_score() -> None:
    ens = Ensemble(const_members())
    s = ens.sample("mixture", 5, seed=0)
    rows = s.rows()
    assert [r["member"] for r in rows] == s.members
    assert [r["seed"] for r in rows] == s.seeds.tolist()
    assert all(type(r["seed"]) is int and r["score"] is None for r in rows)

    ens.stacker = MeanStacker()
    s = ens.sample("vote", 5, seed=0)
    rows = s.rows()
    assert len(rows) == 5 and set(rows[0]) == {"member", "seed", "score"}
    for r, score in zip(rows, s.scores, strict=True):
        assert type(r["score"]) is float and r["score"] == round(float(score), 6)

    hand = Sample(np.zeros((2, 1, 8, 8), np.uint8), ["x", "y"], np.array([3, 4]), None)
    assert hand.rows() == [
        {"member": "x", "seed": 3, "score": None},
        {"member": "y", "seed": 4, "score": None},
    ]


# Construction.


def test_ensemble_refuses_bad_members() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble({})
    mixed = {"A": member("A", ConstGen(0.0)), "B": member("B", ConstGen(0.0), z_dim=16)}
    with pytest.raises(ValueError, match="z_dim"):
        Ensemble(mixed)


def test_default_weights_are_uniform() -> None:
    ens = Ensemble(const_members())
    assert ens.weights == {"A": 0.5, "B": 0.5}
    assert ens.z_dim == Z


# Collapsed and broken output never reaches a batch.


def test_collapse_names_blank_and_identical_sets() -> None:
    rng = np.random.default_rng(0)
    varied = rng.integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    assert collapse(varied) is None
    assert "blank" in collapse(np.zeros((5, 1, 8, 8), np.uint8))
    same = np.repeat(varied[:1], 5, axis=0)
    assert "same picture" in collapse(same)
    assert collapse(varied[:1]) is None  # one varied image is not a collapse
    assert collapse(varied[:0]) is None


def test_sample_reports_which_members_collapsed() -> None:
    members = {"A": member("A", ConstGen(-1.0)), "B": member("B", ConstGen(0.0, spread=0.9))}
    s = Ensemble(members).sample("mixture", 60, seed=0)
    assert set(s.collapsed()) == {"A"}  # a constant generator: every image blank


class NaNGen(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((len(z), 1, 8, 8), float("nan"))


def test_non_finite_output_is_refused_naming_the_member() -> None:
    with pytest.raises(OutputError, match="member bad generated non-finite"):
        member("bad", NaNGen()).generate(torch.zeros(3, Z))


# The stacker's `hidden` inputs: each discriminator's last hidden layer beside the logits.


@pytest.mark.parametrize(
    ("arch", "n_disc"), [("dcgan", 1), ("upsample", 1), ("mlp", 1), ("mlp", 2)]
)
def test_the_logit_is_a_linear_function_of_the_hidden_layer(arch: str, n_disc: int) -> None:
    """What `hidden` returns is the layer the logit is read from: a least-squares fit of the
    logits on it (plus a bias) is exact, for every architecture and for GMAN's several Ds."""
    torch.manual_seed(0)
    g, d = build_pair(arch, z_dim=Z, size=8, channels=1, width=4, n_discriminators=n_disc)
    m = member(arch, g, d)
    images = m.generate_u8(latents(np.arange(300), Z))
    h, logit = m.hidden_and_score(images)
    np.testing.assert_allclose(logit, m.score(images), rtol=1e-6, atol=1e-6)  # one pass, same
    assert h.shape[0] == 300 and h.dtype == np.float32 and h.shape[1] < 300
    one = member(arch, *build_pair(arch, z_dim=Z, size=8, channels=1, width=4))
    assert h.shape[1] == n_disc * one.hidden_and_score(images)[0].shape[1]  # GMAN: side by side
    x = np.column_stack([h, np.ones(len(h))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, logit, rcond=None)
    np.testing.assert_allclose(x @ coef, logit, atol=1e-4)


class HiddenMeanStacker(MeanStacker):
    """log r̂ = mean logit + the mean of the hidden columns: sees every column it is given."""

    def log_ratio(self, inputs: np.ndarray) -> np.ndarray:
        self.widths.append(inputs.shape)
        return inputs[:, :2].mean(axis=1) + inputs[:, 2:].mean(axis=1)

    widths: list


def test_hidden_inputs_follow_the_logits_and_are_scored_a_chunk_at_a_time(
    net_members, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ensgan.ensemble.combinations as combinations

    images = Ensemble(net_members).sample("mixture", 25, seed=0).images
    t = torch.from_numpy(images)
    plain = Ensemble(net_members).features(images)
    ens = Ensemble(net_members, stack_inputs="hidden")
    feats = ens.features(images)
    h = [m.hidden_and_score(t)[0] for m in net_members.values()]
    assert feats.shape == (25, 2 + sum(x.shape[1] for x in h))
    np.testing.assert_array_equal(feats[:, :2], plain)  # the logits first, as before
    np.testing.assert_allclose(feats[:, 2:], np.hstack(h))
    stacker = HiddenMeanStacker()
    stacker.widths = []
    ens.stacker = stacker
    whole = ens.log_ratio(images)
    monkeypatch.setattr(combinations, "CHUNK", 10)
    stacker.widths = []
    np.testing.assert_allclose(ens.log_ratio(images), whole, rtol=1e-5)
    assert [w[0] for w in stacker.widths] == [10, 10, 5]  # never more rows than a chunk
    assert ens.log_ratio(images[:0]).shape == (0,)
