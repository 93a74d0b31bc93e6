"""Where members train at once: the placement over CPU cores and GPUs (a pure function of the
settings and the visible devices), the planned member-to-worker assignment, the environment a
real spawned worker gets, and what `ensgan validate` says. No GPU is needed, none is faked:
the devices are names handed to the pure functions, and a worker's CUDA_VISIBLE_DEVICES is
only an environment variable until CUDA starts."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan import stopping
from ensgan.children import init_member_process
from ensgan.cli import app
from ensgan.config import TrainConfig
from ensgan.errors import ConfigError
from ensgan.gan.placement import VISIBLE, Placement, assign, describe, place, worker_slots
from tests.helpers import write_tiny_project


def train(**kw) -> TrainConfig:
    return TrainConfig(**kw)


@pytest.mark.parametrize(
    ("settings", "members", "cpus", "workers", "threads"),
    [
        ({}, 5, 2, 2, 1),  # one per core
        ({}, 1, 16, 1, 16),  # never more than the members
        ({"workers": 3}, 5, 16, 3, 5),  # train.workers caps
        ({"workers": 8}, 5, 2, 5, 1),  # more than the cores if asked: the cores are shared
    ],
)
def test_cpu_placement_shares_the_cores(
    settings: dict, members: int, cpus: int, workers: int, threads: int
) -> None:
    p = place(train(**settings), members, cpus, visible=[])
    assert (p.gpus, p.workers, p.threads) == ((), workers, threads)
    assert p.in_process is (workers == 1)
    assert p.env(0) == {} and p.device(0) is None


@pytest.mark.parametrize(
    ("settings", "visible", "members", "gpus", "workers", "slot_gpus"),
    [
        ({}, ["0"], 4, ("0",), 1, ["0"]),  # one GPU, one member at a time
        ({"members_per_gpu": 3}, ["0"], 4, ("0",), 3, ["0", "0", "0"]),
        ({}, ["0", "1", "2", "3"], 2, ("0", "1", "2", "3"), 2, ["0", "1"]),  # fewer members
        ({"members_per_gpu": 2}, ["0", "1"], 8, ("0", "1"), 4, ["0", "1", "0", "1"]),
        ({"gpus": 2}, ["0", "1", "2", "3"], 8, ("0", "1"), 2, ["0", "1"]),  # the first two
        ({"gpus": [3, 1]}, ["0", "1", "2", "3"], 8, ("3", "1"), 2, ["3", "1"]),  # those
        ({"members_per_gpu": 4, "workers": 3}, ["0", "1"], 8, ("0", "1"), 3, ["0", "1", "0"]),
        ({"device": "cuda", "gpus": [1]}, ["5", "GPU-ab"], 3, ("GPU-ab",), 1, ["GPU-ab"]),
    ],
)
def test_gpu_placement_spreads_workers_round_the_gpus(
    settings: dict,
    visible: list[str],
    members: int,
    gpus: tuple[str, ...],
    workers: int,
    slot_gpus: list[str],
) -> None:
    p = place(train(**settings), members, 16, visible)
    assert p.gpus == gpus and p.workers == workers and p.threads == 16 // workers
    assert [p.device(s) for s in range(workers)] == slot_gpus
    assert [p.env(s) for s in range(workers)] == [{VISIBLE: g} for g in slot_gpus]
    # one worker on the process's own first device needs no pool; any other device does
    assert p.in_process is (workers == 1 and gpus[0] == visible[0])


def test_device_cpu_ignores_the_gpus() -> None:
    p = place(train(device="cpu", gpus=2), 3, 2, ["0", "1"])
    assert p.gpus == () and p.workers == 2


@pytest.mark.parametrize(
    ("settings", "visible", "message"),
    [
        ({"device": "cuda"}, [], "no CUDA device is visible"),
        ({"gpus": 3}, ["0", "1"], "train.gpus is 3, but 2 GPU(s) are visible"),
        ({"gpus": [0, 2]}, ["0", "1"], "names device(s) [2], but the visible ones are 0..1"),
    ],
)
def test_gpus_that_are_not_there_are_refused(
    settings: dict, visible: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        place(train(**settings), 4, 2, visible)


def test_a_gpu_list_names_each_device_once() -> None:
    for bad in ([], [1, 1]):
        with pytest.raises(ValueError, match="each device once"):
            train(gpus=bad)


def test_auto_without_gpus_is_the_cpu() -> None:
    assert place(train(gpus=[3]), 2, 2, []).gpus == ()


def test_assign_follows_the_pool_first_free_worker_first() -> None:
    """Members in order, each to the worker free first (ties: the lowest slot), as a
    first-come-first-served pool hands them out; the slots are then GPUs round-robin."""
    p = Placement(gpus=("0", "1"), workers=2, threads=1, in_process=False)
    cost = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 1.0, "e": 0.5}
    got = assign(["a", "b", "c", "d", "e"], cost, p)
    # b frees slot 1 at 2 (c: 2-3); then both free at 3: d on slot 0, e on slot 1
    assert got == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}
    lines = describe(p, got)
    assert lines[1] == "  GPU 0: 1 worker(s): a, d" and lines[2] == "  GPU 1: 1 worker(s): b, c, e"
    four = Placement(gpus=("0", "1"), workers=4, threads=1, in_process=False)
    assert describe(four, assign(list(cost), cost, four))[1] == "  GPU 0: 2 worker(s): a, c, e"


def _env_of_worker() -> tuple[int, str | None, int]:
    time.sleep(0.5)  # so the pool starts a second worker for the second task
    import torch

    return os.getpid(), os.environ.get(VISIBLE), torch.cuda.device_count()


def test_each_spawned_worker_sees_only_its_slot_gpu(tmp_path: Path) -> None:
    """A real spawned pool with the initializer the flow and `ensgan train` use: worker k
    sets CUDA_VISIBLE_DEVICES to slot k's device before its first task (here names of
    devices this machine does not have, so torch sees none in either worker)."""
    p = Placement(gpus=("7", "9"), workers=2, threads=1, in_process=False)
    pool = ProcessPoolExecutor(
        2,
        mp_context=get_context("spawn"),
        initializer=init_member_process,
        initargs=(os.getpid(), str(tmp_path), stopping.shared_event(), p, worker_slots()),
    )
    with pool:
        seen = {f.result() for f in [pool.submit(_env_of_worker) for _ in range(2)]}
    assert len({pid for pid, _, _ in seen}) == 2
    assert sorted(env for _, env, _ in seen) == ["7", "9"]
    assert {n for _, _, n in seen} == {0}
    assert os.environ.get(VISIBLE) != "7"  # the parent's own environment is untouched


def test_validate_says_where_the_members_would_train(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(write_tiny_project(tmp_path, train={"workers": 2, "device": "cpu"}))
    res = CliRunner().invoke(app, ["validate"])
    assert res.exit_code == 0, res.output
    assert res.stdout.lstrip().startswith("{")  # stdout: the resolved params, as JSON
    lines = res.stderr.splitlines()
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert lines[0] == f"placement: CPU, 2 worker process(es), {threads} torch thread(s) each"
    names = [n for line in lines[1:3] for n in line.split(": ", 1)[1].split(", ")]
    assert sorted(names) == ["a", "b"]
    assert "no prepared data" in lines[-1]


def test_validate_refuses_gpus_it_cannot_see(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(write_tiny_project(tmp_path, train={"device": "cuda"}))
    res = CliRunner().invoke(app, ["validate"])
    assert res.exit_code == 2 and "no CUDA device is visible" in res.output


HIDE_RAY = (  # the `ray` extra absent: find_spec answers None for a module set to None
    "import sys; sys.modules['prefect_ray'] = None; from ensgan.cli import app; app()"
)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_ray_runner_without_the_ray_extra_is_refused_in_one_line(
    tmp_path: Path, command: str
) -> None:
    """`ensgan validate` refuses it, and `ensgan run` before a server starts or data is
    prepared: one line naming the install, not a traceback at the members."""
    import subprocess
    import sys

    root = write_tiny_project(tmp_path, train={"runner": "ray"})
    res = subprocess.run([sys.executable, "-c", HIDE_RAY, command], cwd=root,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: train.runner: ray needs prefect_ray, which this Python lacks: "
        "pip install 'ensgan[ray]' (or set train.runner: process)"
    ]
    assert not (root / "data").exists() and res.stdout == ""


def test_a_ray_cluster_started_here_gets_a_token_of_its_own(tmp_path: Path) -> None:
    """What a local Ray cluster (ensgan's ray.init, the tests' nodes) is started with: token
    auth and a token file of its own, kept across runs; auth a user configured is theirs."""
    from ensgan.orchestration.runners import own_ray_auth

    env: dict[str, str] = {"HOME": str(tmp_path)}
    own_ray_auth(tmp_path / "auth", env)
    token = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert env["RAY_AUTH_MODE"] == "token" and token.parent == (tmp_path / "auth").resolve()
    assert len(token.read_text()) == 64 and token.stat().st_mode & 0o777 == 0o600
    first = token.read_text()
    own_ray_auth(tmp_path / "auth", again := {"HOME": str(tmp_path)})
    assert again["RAY_AUTH_TOKEN_PATH"] == str(token) and token.read_text() == first
    users = {"RAY_AUTH_MODE": "disabled"}
    own_ray_auth(tmp_path / "other", users)
    assert users == {"RAY_AUTH_MODE": "disabled"} and not (tmp_path / "other").exists()
