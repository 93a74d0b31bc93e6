"""Training speed of one member: per architecture and image size, and channels-last memory
format against the standard layout.

    .venv/bin/python benchmarks/training_speed.py [--steps 300] [--arch dcgan] [--threads 1]
    .venv/bin/python benchmarks/training_speed.py --per-arch [--sizes 16 32 64] [--steps 20]
        [--archs dcgan upsample mlp resnet] [--diffaugment]
    .venv/bin/python benchmarks/training_speed.py --shared 5 [--arch upsample] [--width 16]

The first trains the same member twice (DCGAN-16, batch 64), once per memory format, and prints
ms per step for each and their ratio: the reason `train.channels_last` is on by default. The
second trains one member of each registered architecture (ensgan/registry.py ARCHS) at each
size with the shipped defaults (width 32, batch 64, channels-last; with --diffaugment, every
DiffAugment policy on) and prints ms per step side by side, so a user can size a night at 32
or 64 px. The third times one step of `train.ensemble: shared` (`train_shared`: K MGAN heads,
one discriminator, the batch split over the heads) against one member's step at the same batch
(`train_member`), and a bagged ensemble's K member steps: what a shared step costs. All time
the pipeline's own training functions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ensgan.config import parse_params
from ensgan.data.prepared import prepare
from ensgan.gan.member import train_member
from ensgan.registry import ARCHS

POLICIES = ["color", "translation", "cutout"]


def step_ms(
    work: Path, arch: str, size: int, width: int, steps: int, *, channels_last: bool = True,
    diffaugment: bool = False, tag: str = "",
) -> float:  # fmt: skip
    """Milliseconds per step of one member trained `steps` steps (the data prepared once)."""
    member = {"arch": arch, "seed": 1, "width": width}
    if diffaugment:
        member["diffaugment"] = POLICIES
    base = {"data": {"image_size": size}, "members": {"m": member}}
    data = work / f"prepared-{size}"
    if not data.exists():
        prepare(parse_params(base).data, data)
    train = {"steps": steps, "checkpoint_every": steps, "channels_last": channels_last}
    p = parse_params({**base, "train": {**train, "device": "cpu"}})
    t0 = time.perf_counter()
    train_member("m", p.members["m"], p.train, data, work / f"{arch}-{size}-{tag}", progress=False)
    return (time.perf_counter() - t0) / steps * 1000


def shared(a: argparse.Namespace, work: Path) -> None:
    from ensgan.gan.shared import train_shared

    base = {"data": {"image_size": a.size}, "members": {"m": {"arch": a.arch, "width": a.width}}}
    data = work / "prepared"
    prepare(parse_params(base).data, data)
    train = {"steps": a.steps, "checkpoint_every": a.steps, "device": "cpu"}
    p = parse_params({**base, "train": train})
    heads = {f"h{i}": p.members["m"].model_copy(update={"seed": i}) for i in range(a.shared)}
    t0 = time.perf_counter()
    train_shared(heads, p.train, data, work / "shared", progress=False)
    shared_ms = (time.perf_counter() - t0) / a.steps * 1000
    member_ms = step_ms(work, a.arch, a.size, a.width, a.steps, tag="one")
    print(
        f"{a.arch} width {a.width}, {a.size}x{a.size}, batch 64, {a.steps} steps, "
        f"{a.threads} thread(s); ms per step:"
    )
    print(f"one member:                      {member_ms:7.1f}")
    print(
        f"shared, {a.shared} heads (one run):       {shared_ms:7.1f}  "
        f"({shared_ms / member_ms:.2f}x one member)"
    )
    print(f"bagging, {a.shared} members (one step each): {a.shared * member_ms:7.1f}")


def per_arch(a: argparse.Namespace, work: Path) -> None:
    rows = {
        arch: {
            f"{s} px": step_ms(work, arch, s, a.width, a.steps, diffaugment=a.diffaugment)
            for s in a.sizes
        }
        for arch in a.archs
    }
    aug = ", DiffAugment on" if a.diffaugment else ""
    print(f"ms per step: width {a.width}, batch 64, {a.steps} steps, {a.threads} thread(s){aug}")
    print(pd.DataFrame(rows).T.to_markdown(floatfmt=".1f"))


def layouts(a: argparse.Namespace, work: Path) -> None:
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(a.repeats):
        for cl in (False, True):  # alternate, so drift in machine load hits both alike
            tag = f"{cl}-{r}"
            times[cl].append(step_ms(work, a.arch, 16, a.width, a.steps, channels_last=cl, tag=tag))
    std, cl = min(times[False]), min(times[True])
    print(f"{a.arch} width {a.width}, 16x16, batch 64, {a.steps} steps, {a.threads} thread(s)")
    print(f"standard layout (NCHW):  {std:6.1f} ms/step")
    print(f"channels-last (NHWC):    {cl:6.1f} ms/step")
    print(f"speed-up NCHW / NHWC:    {std / cl:6.2f} x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per format")
    ap.add_argument("--per-arch", action="store_true", help="every architecture at every size")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--diffaugment", action="store_true", help="with every DiffAugment policy")
    ap.add_argument("--shared", type=int, metavar="K", help="time K MGAN heads against a member")
    ap.add_argument("--size", type=int, default=16, help="image size for --shared")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if a.shared:
            shared(a, Path(tmp))
        else:
            (per_arch if a.per_arch else layouts)(a, Path(tmp))


if __name__ == "__main__":
    main()
