"""On a CUDA device (`pytest -m gpu`; benchmarks/device_check.sh runs these on a lent GPU
machine): a member trains, checkpoints and resumes bit-exactly in fp32 and bf16; the
placement spreads real worker processes over the visible GPUs, each seeing only its own.
Self-contained (no conftest, no S3 or Prefect): the device machine has neither. Without
CUDA every test here is skipped, saying so; the CPU side of the same code is tested in
tests/test_training.py and tests/test_placement.py."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ensgan import stopping
from ensgan.children import init_member_process
from ensgan.config import DataConfig, parse_params
from ensgan.data.prepared import prepare
from ensgan.gan.checkpoint import WEIGHT_FILES
from ensgan.gan.member import train_member
from ensgan.gan.placement import VISIBLE, claim_first_gpu, here, visible_gpus, worker_slots

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

STEPS = 12


def params(precision: str, arch: str = "dcgan"):
    return parse_params({
        "data": {"image_size": 16},
        "members": {"m": {"arch": arch, "seed": 3, "width": 8}},
        "train": {"steps": STEPS, "batch_size": 32, "z_dim": 16, "checkpoint_every": 4,
                  "log_every": 2, "device": "cuda", "precision": precision},
    })  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu-data") / "prepared"
    prepare(DataConfig(image_size=16), out)
    return out


def _stop_at(step: int):
    def callback(done: int) -> None:
        if done == step:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_member_trains_on_cuda_and_resumes_bit_exactly(
    tmp_path: Path, data_dir: Path, precision: str, arch: str
) -> None:
    p = params(precision, arch)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    card = train_member("m", p.members["m"], p.train, data_dir, whole, progress=False)
    assert card.device.startswith("cuda")
    with pytest.raises(KeyboardInterrupt):
        train_member("m", p.members["m"], p.train, data_dir, cut, callback=_stop_at(10))
    train_member("m", p.members["m"], p.train, data_dir, cut, progress=False)
    for f in WEIGHT_FILES:
        a, b = (load_file(str(d / "checkpoint" / f"{f}.safetensors")) for d in (whole, cut))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (f, k)
            assert a[k].dtype != torch.bfloat16  # bf16 computes; the weights stay fp32


def _worker_view() -> tuple[int, str | None, int, str]:
    import time

    time.sleep(1.0)  # so that every worker of the pool starts and takes a task
    x = torch.ones(1, device="cuda")
    return os.getpid(), os.environ.get(VISIBLE), torch.cuda.device_count(), str(x.device)


def test_workers_are_placed_over_the_visible_gpus(tmp_path: Path) -> None:
    """Two workers per visible GPU, through the initializer the flow and `ensgan train` use:
    each worker sees one device, its slot's, and the GPUs get two workers each."""
    p = params("fp32").train.model_copy(update={"members_per_gpu": 2})
    visible = visible_gpus()
    placement = here(p, members=64)
    assert placement.gpus == tuple(visible) and placement.workers == 2 * len(visible)
    pool = ProcessPoolExecutor(
        placement.workers,
        mp_context=get_context("spawn"),
        initializer=init_member_process,
        initargs=(os.getpid(), str(tmp_path), stopping.shared_event(), placement, worker_slots()),
    )
    with pool:
        seen = [f.result() for f in [pool.submit(_worker_view) for _ in range(placement.workers)]]
    assert len({pid for pid, *_ in seen}) == placement.workers
    assert sorted(env for _, env, _, _ in seen) == sorted(visible * 2)
    assert {(n, dev) for _, _, n, dev in seen} == {(1, "cuda:0")}


def test_in_process_training_takes_the_first_gpu_asked_for() -> None:
    last = len(visible_gpus()) - 1
    before = torch.cuda.current_device()
    try:
        claim_first_gpu(params("fp32").train.model_copy(update={"gpus": [last]}))
        assert torch.cuda.current_device() == last
    finally:
        torch.cuda.set_device(before)
