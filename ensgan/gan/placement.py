"""Where members train at once: how many worker processes, each one's torch threads, and on
CUDA each one's GPU.

On CUDA a worker process owns one slot for its whole life, and the pool's initializer sets its
CUDA_VISIBLE_DEVICES to that slot's GPU before anything in the process touches CUDA: `cuda` in
that process then means its GPU (cuda:0) everywhere, with no device index threaded through the
code. Slots go round the GPUs (slot k on GPU k mod G), so at most `train.members_per_gpu`
members share a GPU at once and the first G members each get a GPU of their own. Not an
explicit cuda:i per task: a pool hands each member to whichever process is free first, so a
process would open a CUDA context (hundreds of MB) on every GPU it was ever given a member for,
and two members meant for different GPUs could meet on one while the other idled.

The members reach the pool in the planned order (ensgan/gan/schedule.py), each
to the first free worker, so which GPU runs which member follows from the planned costs:
`assign` simulates it for `ensgan validate`. The device count is read without initialising
CUDA in the parent (NVML), so the spawned workers start clean.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from ensgan.config import TrainConfig
from ensgan.errors import ConfigError

if TYPE_CHECKING:
    from ensgan.config import Params
    from ensgan.layout import Layout

VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Placement:
    gpus: tuple[str, ...]  # the devices, as CUDA_VISIBLE_DEVICES names them; () = the CPU
    workers: int  # member processes at once
    threads: int  # torch threads of each
    in_process: bool  # one worker on this process's own default device: no pool needed

    def device(self, slot: int) -> str | None:
        """The GPU of worker slot `slot` (None on the CPU)."""
        return self.gpus[slot % len(self.gpus)] if self.gpus else None

    def env(self, slot: int) -> dict[str, str]:
        """What worker slot `slot` sets in its environment before it touches CUDA."""
        gpu = self.device(slot)
        return {} if gpu is None else {VISIBLE: gpu}


def worker_slots() -> Any:
    """The counter a pool's workers take their slots from (ensgan/children.py)."""
    return get_context("spawn").Value("i", 0)


def visible_gpus() -> list[str]:
    """This process's CUDA devices, named as a child's CUDA_VISIBLE_DEVICES must name them:
    the entries of this process's own CUDA_VISIBLE_DEVICES where it has one (an index or a
    UUID), else 0..N-1. torch counts them through NVML, without initialising CUDA here."""
    import torch

    n = torch.cuda.device_count()
    own = os.environ.get(VISIBLE)
    if own is None:
        return [str(i) for i in range(n)]
    return [x.strip() for x in own.split(",") if x.strip()][:n]


def chosen_gpus(train: TrainConfig, visible: list[str]) -> tuple[str, ...]:
    """The GPUs `train` asks for among `visible` (() for the CPU), or why it cannot have them."""
    if train.device == "cpu" or (train.device == "auto" and not visible):
        return ()
    if not visible:
        raise ConfigError("train.device is 'cuda' but no CUDA device is visible")
    want = train.gpus
    if want is None:
        return tuple(visible)
    if isinstance(want, int):
        if want > len(visible):
            raise ConfigError(f"train.gpus is {want}, but {len(visible)} GPU(s) are visible")
        return tuple(visible[:want])
    missing = [i for i in want if i >= len(visible)]
    if missing:
        raise ConfigError(
            f"train.gpus names device(s) {missing}, but the visible ones are 0..{len(visible) - 1}"
        )
    return tuple(visible[i] for i in want)


def place(train: TrainConfig, members: int, cpus: int, visible: list[str]) -> Placement:
    """Workers for `members` members on `cpus` cores and the `visible` GPUs: on the CPU
    `train.workers` (0: one per core), on CUDA at most gpus x members_per_gpu (`train.workers`
    may ask fewer); never more than the members; the cores shared out among the workers."""
    gpus = chosen_gpus(train, visible)
    slots = len(gpus) * train.members_per_gpu if gpus else cpus
    workers = min(train.workers or slots, members)
    workers = max(1, min(workers, slots) if gpus else workers)
    own_default = not gpus or gpus[0] == visible[0]
    return Placement(gpus, workers, max(1, cpus // workers), workers == 1 and own_default)


def here(train: TrainConfig, members: int) -> Placement:
    """`place` on this machine."""
    return place(train, members, os.cpu_count() or 1, visible_gpus())


def claim_first_gpu(train: TrainConfig) -> None:
    """For training in this process (`ensgan train`'s shared run, boosting's chain, one named
    member): make the placement's first GPU this process's current CUDA device, so that
    `train.gpus` holds there too (nothing on the CPU)."""
    visible = visible_gpus()
    gpus = chosen_gpus(train, visible)
    if gpus:
        import torch

        torch.cuda.set_device(visible.index(gpus[0]))


def assign(order: list[str], cost: dict[str, float], placement: Placement) -> dict[str, int]:
    """The worker slot each member is planned to run on: the members in `order`, each to the
    worker free first (the lowest slot on a tie), as the pool hands them out."""
    free = [(0.0, slot) for slot in range(placement.workers)]
    out: dict[str, int] = {}
    for name in order:
        free.sort()
        t, slot = free[0]
        out[name] = slot
        free[0] = (t + cost.get(name, 0.0), slot)
    return out


def describe(placement: Placement, planned: dict[str, int]) -> list[str]:
    """Lines that say where the members would train (for `ensgan validate`)."""
    w, t = placement.workers, placement.threads
    procs = "in this process" if placement.in_process else f"{w} worker process(es)"
    if not placement.gpus:
        lines = [f"placement: CPU, {procs}, {t} torch thread(s) each"]
        return lines + [f"  worker {s}: {', '.join(_on(planned, s))}" for s in range(w)]
    lines = [
        f"placement: {len(placement.gpus)} GPU(s) (CUDA_VISIBLE_DEVICES "
        f"{', '.join(placement.gpus)}), {procs}, {t} torch thread(s) each;"
        " each worker sees only its GPU"
    ]
    for gpu in placement.gpus:
        slots = [s for s in range(w) if placement.device(s) == gpu]
        names = [n for s in slots for n in _on(planned, s)]
        lines.append(f"  GPU {gpu}: {len(slots)} worker(s): {', '.join(names) or 'nothing'}")
    return lines


def _on(planned: dict[str, int], slot: int) -> list[str]:
    return [n for n, s in planned.items() if s == slot]


RAY_MODULES = ("ray", "prefect_ray")  # what the `ray` extra installs and the Ray runner needs


def check_runner(train: TrainConfig) -> None:
    """Refuse `train.runner: ray` where the `ray` extra is not installed, in one line, where
    validation and the flow start: not after a server has started and the data is prepared."""
    if train.runner != "ray":
        return
    missing = [m for m in RAY_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"train.runner: ray needs {' and '.join(missing)}, which this Python lacks: "
            "pip install 'ensgan[ray]' (or set train.runner: process)"
        )


def explain(params: Params, layout: Layout) -> list[str]:
    """Where `ensgan train` and the flow would train the members on this machine, and why."""
    from ensgan.gan.schedule import plan

    train = params.train
    if train.runner == "ray":
        return [
            f"placement: on Ray (train.runner: ray): each member task asks for {train.ray_cpus}"
            f" CPU(s) and {train.ray_gpus} GPU(s), and Ray sets its CUDA_VISIBLE_DEVICES"
        ]
    placement = here(train, len(params.members))
    if train.ensemble in ("shared", "boosting"):
        how = "one run of every head" if train.ensemble == "shared" else "one member at a time"
        where = f"GPU {placement.gpus[0]}" if placement.gpus else "the CPU"
        return [f"placement: {how} (train.ensemble: {train.ensemble}) on {where}, every core"]
    if layout.prepared.is_dir():
        order, cost = plan(params, layout, placement.workers)
        basis = "by each member's measured step time"
    else:
        order, cost = list(params.members), {n: float(train.steps) for n in params.members}
        basis = "as if every member cost the same: no prepared data to time a step on"
    lines = describe(placement, assign(order, cost, placement))
    return [*lines, f"  (planned {basis}; each member goes to the first free worker)"]
