"""Members on a process pool: submitted in params.yaml's order, reversed, longest first, or planned.

    .venv/bin/python benchmarks/scheduling.py [--steps 600] [--workers 2]

Trains the default five members (params.yaml) on a pool of one-thread worker processes, as the
flow does, four times: submitted in params.yaml's order, in the reverse of it (what the order a
user writes can do), longest first (LPT, by the measured step times), and in the order the flow
plans (`ensgan.gan.schedule.plan`: the order whose simulated pool finishes first).
Prints each member's estimated and measured seconds, and the wall time of the train phase for
each order as a ratio to the planned one (process start-up included).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

from ensgan.config import parse_params
from ensgan.gan.schedule import plan
from ensgan.layout import Layout
from ensgan.pipeline import prepare

REPO = Path(__file__).resolve().parents[1]


def _train(args: tuple[str, str, str]) -> tuple[str, float]:
    name, params_yaml, root = args
    from ensgan.pipeline import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train.run(parse_params(yaml.safe_load(params_yaml)), Layout(Path(root)), name, progress=False)
    return name, time.perf_counter() - t0


def _phase(order: list[str], params_yaml: str, root: Path, workers: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = dict(pool.map(_train, [(n, params_yaml, str(root)) for n in order]))
    return time.perf_counter() - t0, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"] |= {"steps": a.steps, "checkpoint_every": a.steps, "device": "cpu"}
    params = parse_params(raw)
    params_yaml = yaml.safe_dump(raw)
    with tempfile.TemporaryDirectory() as tmp:
        given = list(params.members)
        prepare.run(params, Layout(Path(tmp) / "probe"))
        planned, cost = plan(params, Layout(Path(tmp) / "probe"), a.workers)
        orders = {
            "params.yaml order": given,
            "reversed": given[::-1],
            "longest first": sorted(given, key=lambda n: -cost[n]),
            "planned": planned,
        }
        wall: dict[str, float] = {}
        for k, (label, order) in enumerate(orders.items()):
            root = Path(tmp) / str(k)
            prepare.run(params, Layout(root))
            wall[label], secs = _phase(order, params_yaml, root, a.workers)

    print(f"{len(given)} members x {a.steps} steps on {a.workers} one-thread workers")
    print(f"{'member':<12} {'arch':<9} {'estimated s':>11} {'measured s':>10}")
    for n in orders["longest first"]:
        print(f"{n:<12} {params.members[n].arch:<9} {cost[n]:11.1f} {secs[n]:10.1f}")
    best = wall["planned"]
    for label, order in orders.items():
        print(f"{label:<18} {wall[label]:6.1f} s  {wall[label] / best:5.2f} x  {order}")
    print(f"a perfect split of the measured times: {sum(secs.values()) / a.workers:.1f} s")


if __name__ == "__main__":
    main()
