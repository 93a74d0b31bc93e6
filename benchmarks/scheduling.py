"""Members on a process pool in params.yaml's order against the longest first.

    .venv/bin/python benchmarks/scheduling.py [--steps 600] [--workers 2]

Trains the default five members (params.yaml) on a pool of one-thread worker processes, as the
flow does, twice: submitted in params.yaml's order, then in `longest_first` order (remaining
steps x FLOPs per step). Prints each member's FLOP estimate and measured time, the wall time of
the train phase for both orders and their ratio.
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
from ensgan.layout import Layout
from ensgan.orchestration.schedule import longest_first, step_flops
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
        roots = {k: Path(tmp) / k for k in ("given", "longest")}
        for root in roots.values():
            prepare.run(params, Layout(root))
        given = list(params.members)
        longest = longest_first(params, Layout(roots["longest"]))
        t_given, secs = _phase(given, params_yaml, roots["given"], a.workers)
        t_longest, _ = _phase(longest, params_yaml, roots["longest"], a.workers)

    print(f"{len(given)} members x {a.steps} steps on {a.workers} one-thread workers")
    print(f"{'member':<12} {'arch':<9} {'MFLOP/step':>11} {'seconds':>8}")
    for n in longest:
        m = params.members[n]
        flops = step_flops(m, params.train, params.data.image_size, params.data.channels)
        print(f"{n:<12} {m.arch:<9} {flops / 1e6:11.0f} {secs[n]:8.1f}")
    print(f"params.yaml order {given}: {t_given:6.1f} s")
    print(f"longest first     {longest}: {t_longest:6.1f} s")
    print(
        f"speed-up: {t_given / t_longest:.2f} x (ideal: sum / workers = "
        f"{sum(secs.values()) / a.workers:.1f} s)"
    )


if __name__ == "__main__":
    main()
