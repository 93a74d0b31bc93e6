"""Members one after another (all cores to torch) vs side by side (one process per core).

    .venv/bin/python benchmarks/parallel_members.py [--steps 300] [--members 2]

Prints images/s for both and their ratio: the reason the flow maps member training over a
process pool with one torch thread per process instead of giving torch every core.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import torch

from ensgan.config import parse_params
from ensgan.data.prepared import prepare


def _params(steps: int, members: int):
    return parse_params(
        {
            "members": {f"m{i}": {"arch": "dcgan", "seed": i, "width": 32} for i in range(members)},
            "train": {"steps": steps, "batch_size": 64, "checkpoint_every": steps, "device": "cpu"},
        }
    )


def _train(args: tuple) -> None:
    name, steps, members, data_dir, out_root, threads = args
    from ensgan.gan.member import train_member

    torch.set_num_threads(threads)
    p = _params(steps, members)
    train_member(name, p.members[name], p.train, Path(data_dir), Path(out_root) / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--members", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prepared"
        prepare(_params(a.steps, a.members).data, data)
        names = [f"m{i}" for i in range(a.members)]
        images = a.steps * 64 * a.members

        t0 = time.perf_counter()
        for n in names:
            _train((n, a.steps, a.members, str(data), f"{tmp}/seq", cores))
        seq = time.perf_counter() - t0

        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(min(cores, a.members)) as pool:
            pool.map(_train, [(n, a.steps, a.members, str(data), f"{tmp}/par", 1) for n in names])
        par = time.perf_counter() - t0

    print(f"{a.members} dcgan members x {a.steps} steps (batch 64, 16x16), {cores} cores")
    print(f"one after another, {cores} torch threads: {images / seq:8.0f} images/s ({seq:.1f} s)")
    print(f"side by side, 1 thread per process:      {images / par:8.0f} images/s ({par:.1f} s)")
    print(f"ratio side-by-side / one-after-another:  {seq / par:8.2f} x")


if __name__ == "__main__":
    main()
