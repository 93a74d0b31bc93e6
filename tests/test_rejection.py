"""Selecting by the density ratio: the DRS rule, MH chains, ESS, and the combinations on them."""

from __future__ import annotations

import numpy as np
import pytest

from ensgan.ensemble.combinations import Ensemble
from ensgan.ensemble.rejection import drs_accept_prob, kish_ess, mh_final_states
from ensgan.pipeline.stack import floored_weights
from tests.helpers import ConstGen, MeanStacker, const_members, member


def test_drs_with_gamma_zero_is_plain_rejection_sampling() -> None:
    lr = np.log(np.array([0.01, 0.1, 0.5, 1.0, 2.0, 50.0]))
    p = drs_accept_prob(lr, log_m=0.0)  # M = 1
    np.testing.assert_allclose(p, np.minimum(1.0, np.exp(lr)), rtol=1e-4)
    assert (drs_accept_prob(lr, 0.0, gamma=2.0) < p).all()  # γ > 0 accepts less
    assert (np.diff(drs_accept_prob(lr, 0.0, gamma=1.0)) >= 0).all()  # monotone in r̂


def test_drs_keeps_member_shares_and_hits_its_target_acceptance() -> None:
    """Each member keeps its mixture share (no member's modes removed); within a member,
    images are accepted with probability min(1, r̂/M), so brighter (more 'real') ones gain."""
    members = const_members(spread=0.4)  # A dark, B bright, each spread by the latent
    ens = Ensemble(members, stacker=MeanStacker(log_m=0.3))
    s = ens.sample("drs", 2000, seed=0)
    labels = np.array(s.members)
    assert 0.45 < (labels == "A").mean() < 0.55  # the mixture's share, though A looks fake
    plain = ens.sample("mixture", 2000, seed=0)
    plain_a = plain.images[np.array(plain.members) == "A"].mean()
    assert s.images[labels == "A"].mean() > plain_a + 5  # tilted toward higher r̂
    # Target acceptance: the mean of min(1, r̂/M) over each member's proposals.
    expected = []
    for name in ("A", "B"):
        lr = ens.log_ratio(ens.member_sample(name, np.arange(4000)))
        expected.append(drs_accept_prob(lr, 0.3).mean())
    # Half the images from each member: overall rate = harmonic mean of the members' rates.
    target = 2 / (1 / expected[0] + 1 / expected[1])
    assert s.stats["accept_rate"] == pytest.approx(target, rel=0.1)
    assert s.stats["ess"] >= 1


@pytest.mark.parametrize("t", [0.5, 0.25])
def test_drs_temperature_accepts_by_the_ratio_to_the_power_t(t: float) -> None:
    """drs_temperature T filters by (r̂/M)^T: more is accepted than at T = 1, at the rate the
    tempered rule predicts, and the tilt toward high r̂ is gentler."""
    ens = Ensemble(const_members(spread=0.4), stacker=MeanStacker(log_m=0.3))
    plain = ens.sample("drs", 2000, seed=0)
    ens.drs_temperature = t
    tempered = ens.sample("drs", 2000, seed=0)
    rates = []
    for name in ("A", "B"):
        lr = ens.log_ratio(ens.member_sample(name, np.arange(4000)))
        rates.append(drs_accept_prob(t * lr, t * 0.3).mean())
    assert tempered.stats["accept_rate"] == pytest.approx(2 / sum(1 / r for r in rates), rel=0.1)
    assert tempered.stats["accept_rate"] > plain.stats["accept_rate"] + 0.05
    mix = ens.sample("mixture", 2000, seed=0)
    a_plain, a_tempered, a_mix = (
        x.images[np.array(x.members) == "A"].mean() for x in (plain, tempered, mix)
    )
    assert a_mix + 2 < a_tempered < a_plain - 2  # tilted, but less than at T = 1


def test_mh_chains_sample_the_target_of_a_known_ratio() -> None:
    """Proposals of two kinds, equally likely, with r̂ = 1 and 3: the target puts 3/4 on the
    second kind, whatever the start."""
    rng = np.random.default_rng(0)
    n, k = 4000, 60
    kind = rng.integers(0, 2, size=(n, k))
    lr = np.log(np.where(kind == 1, 3.0, 1.0))
    cur, moves, restarted = mh_final_states(np.full(n, np.log(2.0)), lr, rng)  # a real start
    final_kind = kind[np.arange(n), cur]
    assert final_kind.mean() == pytest.approx(0.75, abs=0.03)
    assert not restarted.any() and (moves > 0).all()


def test_mh_accepts_everything_at_equal_ratios_and_restarts_stuck_chains() -> None:
    rng = np.random.default_rng(1)
    cur, moves, restarted = mh_final_states(np.zeros(5), np.zeros((5, 7)), rng)
    assert (cur == 6).all() and (moves == 7).all() and not restarted.any()
    # A start no proposal can leave: the chain is run again from its first proposal.
    cur, moves, restarted = mh_final_states(np.full(3, 1e9), np.zeros((3, 4)), rng)
    assert restarted.all() and (cur == 3).all()


def test_mh_combination_outputs_generated_images_with_stats() -> None:
    ens = Ensemble(const_members(spread=0.4), stacker=MeanStacker(), mh_chain=20)
    s = ens.sample("mh", 300, seed=0)
    assert s.images.shape == (300, 1, 8, 8)
    labels = np.array(s.members)
    assert (labels == "B").mean() > 0.6  # B's images are the more 'real' ones
    # Every output regenerates from its member and seed (it is a generated image).
    again = np.stack(
        [
            ens.member_sample(m, np.array([sd]))[0]
            for m, sd in zip(s.members[:10], s.seeds[:10], strict=True)
        ]
    )
    assert np.abs(again.astype(int) - s.images[:10].astype(int)).max() <= 1
    assert 0 < s.stats["accept_rate"] < 1 and s.stats["ess"] > 1
    assert 0 <= s.stats["restarted_chains"] <= 1


def test_weighted_uses_the_stackers_member_weights() -> None:
    stacker = MeanStacker(weights={"A": 0.2, "B": 0.8})
    s = Ensemble(const_members(), stacker=stacker).sample("weighted", 2000, seed=0)
    assert np.mean(np.array(s.members) == "B") == pytest.approx(0.8, abs=0.03)


def test_floored_weights_are_one_em_step_with_a_floor() -> None:
    prior = {"a": 0.5, "b": 0.25, "c": 0.25}
    w = floored_weights(prior, {"a": 1.0, "b": 3.0, "c": 0.0}, floor=0.5)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["c"] == pytest.approx(0.5 * 0.25)  # no member below half its prior share
    assert w["b"] / prior["b"] > w["a"] / prior["a"] > w["c"] / prior["c"]  # most real gains
    assert floored_weights(prior, {"a": 2.0, "b": 2.0, "c": 2.0}, 0.5) == pytest.approx(prior)
    assert floored_weights(prior, {"a": 0.0, "b": 0.0, "c": 0.0}, 0.5) == prior


def test_kish_ess() -> None:
    assert kish_ess(np.zeros(50)) == pytest.approx(50)
    assert kish_ess(np.array([0.0, -50.0, -50.0])) == pytest.approx(1.0, abs=1e-6)
    assert kish_ess(np.array([])) == 0.0


def test_drs_and_mh_keep_a_constant_member_in_play() -> None:
    """A member the stacker dislikes is thinned by MH, but DRS keeps its share."""
    members = {"A": member("A", ConstGen(-0.9, 0.05)), "B": member("B", ConstGen(0.9, 0.05))}
    ens = Ensemble(members, stacker=MeanStacker(log_m=1.0), mh_chain=10)
    drs = ens.sample("drs", 400, seed=0)
    assert 0.4 < np.mean(np.array(drs.members) == "A") < 0.6
    mh = ens.sample("mh", 400, seed=0)
    assert np.mean(np.array(mh.members) == "A") < 0.3
