"""Training speed of one member: channels-last memory format against the standard layout.

    .venv/bin/python benchmarks/training_speed.py [--steps 300] [--arch dcgan] [--threads 1]

Trains the same member twice (the default DCGAN-16, batch 64), once per memory format, and
prints ms per step for each and their ratio: the reason `train.channels_last` is on by default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ensgan.config import parse_params
from ensgan.data.prepared import prepare
from ensgan.gan.member import train_member


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per format")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prepared"
        base = {"members": {"m": {"arch": a.arch, "seed": 1, "width": a.width}}}
        prepare(parse_params(base).data, data)
        for r in range(a.repeats):
            for cl in (False, True):  # alternate, so drift in machine load hits both alike
                train = {"steps": a.steps, "checkpoint_every": a.steps, "channels_last": cl}
                p = parse_params({**base, "train": {**train, "device": "cpu"}})
                t0 = time.perf_counter()
                train_member("m", p.members["m"], p.train, data, Path(tmp) / f"{cl}-{r}")
                times[cl].append((time.perf_counter() - t0) / a.steps * 1000)
    std, cl = min(times[False]), min(times[True])
    print(f"{a.arch} width {a.width}, 16x16, batch 64, {a.steps} steps, {a.threads} thread(s)")
    print(f"standard layout (NCHW):  {std:6.1f} ms/step")
    print(f"channels-last (NHWC):    {cl:6.1f} ms/step")
    print(f"speed-up NCHW / NHWC:    {std / cl:6.2f} x")


if __name__ == "__main__":
    main()
