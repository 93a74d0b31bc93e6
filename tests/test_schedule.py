"""The order members go to the pool: a simulated first-come-first-served pool, the order that
finishes first, and step times measured per member with finished ones skipped."""

from __future__ import annotations

import pytest

from ensgan.config import parse_params
from ensgan.data.prepared import prepare
from ensgan.gan.member import train_member
from ensgan.gan.schedule import (
    EXHAUSTIVE_UP_TO,
    best_order,
    makespan,
    plan,
    remaining_steps,
)
from ensgan.layout import Layout


def _params(steps: int = 6):
    members = {
        "small": {"arch": "dcgan", "width": 4, "seed": 1},
        "mlp": {"arch": "mlp", "width": 4, "seed": 2},
        "big": {"arch": "dcgan", "width": 32, "seed": 3},
    }
    train = {"steps": steps, "batch_size": 32, "z_dim": 8, "checkpoint_every": 3, "device": "cpu"}
    return parse_params({"data": {"image_size": 16}, "members": members, "train": train})


def test_makespan_simulates_a_first_come_first_served_pool() -> None:
    cost = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}
    assert makespan(["a", "b", "c", "d"], cost, 1) == 8.0
    assert makespan(["a", "b", "c", "d"], cost, 2) == 4.0  # a | b, c then d on a's worker
    assert makespan(["d", "c", "b", "a"], cost, 2) == 5.0  # a starts last, alone at the end
    assert makespan(["a"], cost, 4) == 3.0


def test_best_order_beats_longest_first_where_it_can() -> None:
    """Five members on two workers, with the step times measured for the default params:
    longest first leaves a short member alone at the end; the best order does not."""
    cost = {"dcgan_a": 17.7, "dcgan_b": 16.9, "upsample_c": 20.9, "mlp_d": 6.1, "dcgan_e": 12.6}
    longest = sorted(cost, key=lambda n: -cost[n])
    best = best_order(cost, 2)
    assert sorted(best) == sorted(cost)
    assert makespan(best, cost, 2) == pytest.approx(37.8)  # the best two-way split
    assert makespan(longest, cost, 2) == pytest.approx(39.6)
    # Beyond the exhaustive limit: longest first.
    many = {f"m{i}": float(i % 5 + 1) for i in range(EXHAUSTIVE_UP_TO + 1)}
    assert best_order(many, 3) == sorted(many, key=lambda n: -many[n])


def test_plan_measures_the_members_and_skips_finished_ones(tmp_path) -> None:
    p, layout = _params(), Layout(tmp_path)
    data = prepare(p.data, layout.prepared)
    order, cost = plan(p, layout, workers=2)
    assert sorted(order) == sorted(p.members)
    assert cost["big"] > cost["small"] > 0  # 64x the channels of the small dcgan
    # A finished member has nothing left to do: no cost, whatever its size.
    train_member("big", p.members["big"], p.train, layout.prepared, layout.member("big"))
    assert remaining_steps(p, layout, "big", data.sha256) == 0
    assert plan(p, layout, workers=2)[1]["big"] == 0.0
    # Raising the steps gives it the difference to do, not all of them.
    assert remaining_steps(_params(steps=9), layout, "big", data.sha256) == 3
    # One worker: the order cannot matter and nothing is measured.
    assert plan(p, layout, workers=1) == (list(p.members), {})
