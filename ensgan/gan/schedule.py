"""In which order the pool gets the members, so that the train phase ends as early as it can.

A process pool hands members to workers first come, first served, so the submission order
decides which members share a worker, and a poor order ends with one long member training
alone. Each member's remaining work is estimated as its remaining steps times the time of one
training step, measured on the spot (a few steps on random data, one thread), and the order
whose simulated pool finishes first is chosen: every order for up to 8 members (8! = 40,320
simulations, milliseconds), longest first (LPT, within 4/3 of the best) beyond that.
benchmarks/scheduling.py measures the orders side by side.
"""

from __future__ import annotations

import heapq
import itertools
import time

import torch

from ensgan.config import MemberConfig, Params, TrainConfig
from ensgan.gan.device import resolve_device
from ensgan.gan.loop import gan_step
from ensgan.gan.losses import make_loss
from ensgan.gan.member import fingerprint, resumable_step
from ensgan.gan.nets import member_nets
from ensgan.io.cards import DataCard, read_card
from ensgan.layout import Layout

EXHAUSTIVE_UP_TO = 8


def step_seconds(
    member: MemberConfig,
    train: TrainConfig,
    size: int,
    channels: int,
    steps: int = 3,
    compiled: bool = False,
) -> float:
    """Seconds per training step of this member on its device (one thread on a CPU): the
    training loop's own step (ensgan/gan/loop.py gan_step) at the real batch size and
    precision on random data, after one warm-up step. The caller's random state is kept.
    `compiled`: the nets under `torch.compile` (nn.Module.compile: state dict keys kept),
    after three warm-up steps (compiling, and recompiling once shapes settle); the device
    check measures whether it helps."""
    device = resolve_device(train.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return _time_steps(member, train, size, channels, steps, device, compiled)
    finally:
        torch.set_num_threads(threads)


def _time_steps(
    member: MemberConfig,
    train: TrainConfig,
    size: int,
    channels: int,
    steps: int,
    device: torch.device,
    compiled: bool = False,
) -> float:
    loss = make_loss(train.loss, member.gman, member.gman_lambda)
    nets = member_nets(member, train, size=size, channels=channels, loss=loss, device=device)
    g, ds, opt_g, opt_d = nets.generator, nets.discriminators, nets.opt_g, nets.opt_d
    warm = 3 if compiled else 1
    for net in (g, *ds) if compiled else ():
        net.compile()
    fmt = torch.channels_last if train.channels_last else torch.contiguous_format
    real = torch.rand(train.batch_size, channels, size, size, device=device)
    real = real.contiguous(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)  # DiffAugment's draws
    for i in range(steps + warm):
        if i == warm:
            _sync(device)
            t0 = time.perf_counter()
        z = torch.randn(train.batch_size, train.z_dim, device=device)
        augment = member.diffaugment
        gan_step(g, ds, opt_g, opt_d, loss, real, z, augment, gen, precision=train.precision)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def makespan(order: list[str], cost: dict[str, float], workers: int) -> float:
    """When a first-come-first-served pool of `workers` finishes the members in `order`."""
    free = [0.0] * workers
    for name in order:
        heapq.heappush(free, heapq.heappop(free) + cost[name])
    return max(free)


def best_order(cost: dict[str, float], workers: int) -> list[str]:
    """The submission order that finishes first (ties: the order given)."""
    longest = sorted(cost, key=lambda n: -cost[n])  # stable: ties keep the given order
    if len(cost) > EXHAUSTIVE_UP_TO:
        return longest
    best, best_time = longest, makespan(longest, cost, workers)
    for order in itertools.permutations(cost):
        t = makespan(list(order), cost, workers)
        if t < best_time - 1e-9:
            best, best_time = list(order), t
    return best


def remaining_steps(params: Params, layout: Layout, name: str, data_sha: str) -> int:
    """Steps left to train: all of them unless a checkpoint of this member can be resumed."""
    fp = fingerprint(data_sha, params.members[name], params.train)
    done = resumable_step(layout.member(name), fp, params.train.steps)
    return params.train.steps - (done or 0)


def plan(params: Params, layout: Layout, workers: int) -> tuple[list[str], dict[str, float]]:
    """The order to submit the members in, and each one's estimated seconds of work left."""
    if workers == 1:  # one after another: the order cannot matter, nothing to measure
        return list(params.members), {}
    data = read_card(DataCard, layout.prepared)
    _, channels, size, _ = data.shape
    cost: dict[str, float] = {}
    for name, member in params.members.items():
        left = remaining_steps(params, layout, name, data.sha256)
        cost[name] = left * step_seconds(member, params.train, size, channels) if left else 0.0
    return best_order(cost, workers), cost
