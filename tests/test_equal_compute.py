"""benchmarks/equal_compute.py: every method's params at equal generator updates, and its
verdict against the single member."""

from __future__ import annotations

import pandas as pd
import pytest

from ensgan.config import parse_params
from tests.helpers import TINY, load_benchmark

bench = load_benchmark("equal_compute")
BASE = parse_params({**TINY, "members": {
    "a": {"arch": "dcgan", "seed": 1, "width": 8},
    "b": {"arch": "upsample", "seed": 2, "width": 4},
    "c": {"arch": "mlp", "seed": 3, "width": 4},
}, "train": {**TINY["train"], "steps": 7, "batch_size": 32}})  # fmt: skip


def updates(p) -> int:
    k = 1 if p.train.ensemble == "shared" else len(p.members)
    return p.train.steps * k


@pytest.mark.parametrize("method", bench.METHODS)
def test_every_method_gets_the_same_generator_updates(method: str) -> None:
    p = bench.method_params(BASE, method, seed=2)
    assert updates(p) == 3 * 7 and p.train.workers == 1
    assert p.train.ensemble == {"single": "bagging", "clustered-da": "clustered"}.get(
        method, method
    )
    assert next(iter(p.members.values())).seed == 201  # training seed 2: member seeds + 200


def test_shared_heads_are_the_first_member_over_a_batch_that_splits() -> None:
    p = bench.method_params(BASE, "shared", seed=1)
    assert {(m.arch, m.width) for m in p.members.values()} == {("dcgan", 8)}
    assert [m.seed for m in p.members.values()] == [101, 102, 103]
    assert p.train.batch_size == 33 and p.train.steps == 21  # 32 -> the nearest multiple of 3
    single = bench.method_params(BASE, "single", seed=1)
    assert list(single.members) == ["a"] and single.train.steps == 21
    da = bench.method_params(BASE, "clustered-da", seed=1)
    assert da.train.cluster_seed == 1 and all(m.diffaugment for m in da.members.values())


def test_the_verdict_needs_every_target_figure_beyond_two_errors() -> None:
    rows = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        rows.append({"method": "single", "seed": seed, "fd": 10 + jitter, "kid": 5 + jitter,
                     "recall": 0.5 + jitter, "coverage": 0.5 + jitter})  # fmt: skip
        rows.append({"method": "good", "seed": seed, "fd": 8 + jitter, "kid": 3 + jitter,
                     "recall": 0.7 + jitter, "coverage": 0.7 + jitter})  # fmt: skip
        rows.append({"method": "mixed", "seed": seed, "fd": 8 + jitter, "kid": 3 + jitter,
                     "recall": 0.5 + jitter, "coverage": 0.7 + jitter})  # fmt: skip
    text = bench.verdict(pd.DataFrame(rows))
    good, mixed = (line for line in text.splitlines() if line.startswith("- "))
    assert good.startswith("- good:") and good.endswith("MEETS the target")
    assert "recall ties" in mixed and mixed.endswith("misses the target")
    assert "fd beats (+2.000" in good
