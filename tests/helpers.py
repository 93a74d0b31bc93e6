"""Plain builders and constants shared by test modules (fixtures live in conftest.py).

A test module imports what it shares from here, never from another test module: a test file
then stands alone, and moving a test does not break the files that borrowed from it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

import boto3
import numpy as np
import torch
from botocore.client import BaseClient
from botocore.config import Config
from PIL import Image
from torch import nn

if TYPE_CHECKING:
    from ensgan.gan.loaded import LoadedMember

REPO = Path(__file__).resolve().parents[1]


def committed_params() -> str:
    """params.yaml as committed (HEAD), not the working copy a user's `dvc exp run -S` edits."""
    res = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:params.yaml"],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout


# =============================================================================================
# Servers on loopback: how tests find a free port and a console script, and talk S3.
# =============================================================================================
@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint_url: str
    log: Path

    def client(self) -> BaseClient:
        """A plain boto3 S3 client for this server (test setup and inspection)."""
        cfg = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 2},
        )
        return boto3.client("s3", endpoint_url=self.endpoint_url, config=cfg)


def venv_tool(name: str) -> str | None:
    """A console script of this venv, even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they cannot repeat)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


# =============================================================================================
# A tiny project: 2 members, 8x8 images, a few dozen steps.
# =============================================================================================
TINY = {
    "data": {"image_size": 8},
    "members": {
        "a": {"arch": "dcgan", "seed": 1, "width": 8},
        "b": {"arch": "upsample", "seed": 2, "width": 4},
    },
    "train": {
        "steps": 30, "batch_size": 32, "checkpoint_every": 10, "log_every": 5,
        "device": "cpu", "workers": 2,
    },
    "stack": {"cv_folds": 3, "burn_in": 200, "n_fake": 60},
    "combine": {"mh_chain": 8},
    "evaluate": {"n_samples": 100, "n_mh": 60, "classifier_steps": 30, "grid_size": 4},
    "generate": {"n_images": 40, "shard_size": 16},
}  # fmt: skip


# The flow's project bags, with a GMAN member, and publishes MH samples (the DVC project
# boosts and publishes DRS samples): every method runs under both drivers.
TINY_FLOW = {
    "members": {
        "a": {"arch": "dcgan", "seed": 1, "width": 8},
        "b": {"arch": "upsample", "seed": 2, "width": 4, "discriminators": 2, "gman": "softmax"},
    },
    "stack": {"features": "logits", "model": "logistic", "n_fake": None},  # DVC's: hidden
    "generate": {"method": "mh"},
}


def tiny_params(**sections: dict) -> str:
    """A params.yaml of the package's defaults with tiny settings (and any `sections` merged
    onto TINY's), every key written out as in the committed file (dvc.yaml names keys).
    Never the working params.yaml, which a user's `dvc exp run -S` may have changed. Params
    that do not validate are written as given, for the tests of their errors."""
    import yaml

    from ensgan.config import ConfigError, parse_params

    params: dict = {}
    for key in {**TINY, **sections}:  # a section given is merged onto TINY's, not instead
        if key == "members":
            params[key] = sections.get(key, TINY[key])
        else:
            params[key] = {**TINY.get(key, {}), **sections.get(key, {})}
    with suppress(ConfigError):
        params = parse_params(params).model_dump(mode="json")
    return yaml.safe_dump(params, sort_keys=False)


def write_tiny_project(root: Path, **sections: dict) -> Path:
    """A project directory whose params.yaml is `tiny_params(**sections)`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(tiny_params(**sections))
    return root


def run_stages(root: Path) -> dict:
    """Every stage once on the project at `root`, in this process and in dvc.yaml's order (as
    `dvc repro` runs them, no Prefect): what each stage returned, by name."""
    from ensgan.config import load_params
    from ensgan.layout import Layout
    from ensgan.pipeline import evaluate, generate, prepare, publish, stack, train

    params, layout = load_params(root / "params.yaml"), Layout(root)
    done = {"prepare": prepare.run(params, layout)}
    done["train"] = train.run(params, layout, progress=False)
    done["stack"] = stack.run(params, layout)
    done["evaluate"] = evaluate.run(params, layout)
    done["generate"] = generate.run(params, layout)
    done["publish"] = publish.run(params, layout, done["generate"]["run_id"])
    return done


# =============================================================================================
# Batches: a small published-format batch of random images, and its manifest read back.
# =============================================================================================
BATCH_EXTRA = {"data_sha256": "d" * 64, "params_sha256": "p" * 64, "method": "vote"}


def make_batch(
    out: Path, run_id: str = "run-1", n: int = 7, channels: int = 3, seed: int = 0
) -> tuple[Path, np.ndarray]:
    """A batch of n random 8x8 images in shards of 3 (so >= 2 shards), plus the images."""
    from ensgan.io.batches import write_batch

    images = np.random.default_rng(seed).integers(0, 256, (n, channels, 8, 8), dtype=np.uint8)
    scores = np.linspace(0, 1, n, dtype=np.float32)  # numpy scalars, as the pipeline has them
    rows = [{"member": f"g{i % 2}", "seed": seed * 100 + i, "score": scores[i]} for i in range(n)]
    return write_batch(out, run_id, images, rows, shard_size=3, extra=BATCH_EXTRA), images


def manifest(batch_dir: Path) -> list[dict]:
    """The rows of a batch's manifest.jsonl."""
    from ensgan.io.batches import MANIFEST

    return [json.loads(line) for line in (batch_dir / MANIFEST).read_text().splitlines()]


# =============================================================================================
# Stand-in members whose outputs are known (untrained): constant generators, a discriminator
# whose logit is the mean pixel, and a stacker whose log-ratio is the mean logit.
# =============================================================================================
Z = 8  # the stand-ins' latent size
CPU = torch.device("cpu")


class ConstGen(nn.Module):
    """Every image is `value` everywhere; `spread` > 0 adds a per-latent offset in +-spread."""

    def __init__(self, value: float, spread: float = 0.0) -> None:
        super().__init__()
        self.value, self.spread = value, spread

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        v = self.value + self.spread * torch.tanh(z[:, 0])
        return v[:, None, None, None].expand(len(z), 1, 8, 8).clone()


class MeanDisc(nn.Module):
    """Logit = mean pixel in [-1, 1]: brighter looks more real."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


class MeanStacker:
    """A 'fitted' stacker: log r̂ = mean of the member logits, P(real) = sigmoid of it."""

    def __init__(self, log_m: float = 1.0, weights: dict | None = None) -> None:
        self.card = SimpleNamespace(
            drs_log_m={"A": log_m, "B": log_m, "dcgan": log_m, "mlp": log_m},
            member_weights=weights or {"A": 0.5, "B": 0.5, "dcgan": 0.5, "mlp": 0.5},
        )
        self.real_log_ratios = np.array([0.5, 1.0, 1.5])

    def log_ratio(self, logits: np.ndarray) -> np.ndarray:
        return logits.mean(axis=1)

    def prob_real(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.log_ratio(logits)))

    def log_ratio_of(self, prob_real: np.ndarray) -> np.ndarray:
        p = np.clip(prob_real, 1e-12, 1.0 - 1e-12)
        return np.log(p) - np.log1p(-p)  # prob_real's inverse


def member(
    name: str, gen: nn.Module, disc: nn.Module | None = None, z_dim: int = Z
) -> LoadedMember:
    """A LoadedMember around `gen` (and `disc`, MeanDisc by default), on the CPU."""
    from ensgan.gan.loaded import LoadedMember

    return LoadedMember(name, z_dim, gen.eval(), (disc or MeanDisc()).eval(), CPU)


def const_members(spread: float = 0.0) -> dict[str, LoadedMember]:
    """A: all -1 (pixel 0), B: all +1 (pixel 255); with spread, A is dark and B bright."""
    if spread:
        return {"A": member("A", ConstGen(-0.5, spread)), "B": member("B", ConstGen(0.5, spread))}
    return {"A": member("A", ConstGen(-1.0)), "B": member("B", ConstGen(1.0))}


# =============================================================================================
# git and DVC in a project copy: the stages a `dvc repro` runs, and a command run there.
# =============================================================================================
STAGES = ["prepare", "train", "stack", "evaluate", "generate", "publish"]


def sh(repo: Path, *cmd: str, check: bool = True) -> str:
    """Run `cmd` in `repo` with this venv's tools first on PATH and the copy's code importable;
    its output. check=True: it must succeed; check=False: it must be refused."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(repo),  # the stages run this copy of the code, edits included
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }  # fmt: skip
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    elif res.returncode == 0:
        raise AssertionError(f"{' '.join(cmd)} succeeded, expected a refusal:\n{res.stdout}")
    return res.stdout + res.stderr


# --- image and array files (tests/test_data.py, tests/test_user_errors.py) ---


def write_image(path: Path, color: int | tuple[int, int, int], size=(12, 10), mode=None) -> Path:
    """A solid-colour image (grayscale for an int colour, RGB for a triple)."""
    mode = mode or ("L" if isinstance(color, int) else "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR declaring width x height 8-bit gray pixels, and no
    pixel data: a few dozen bytes that a decoder would expand to width * height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    sig = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def lying_npy(shape: tuple[int, ...], payload: int = 64) -> bytes:
    """A .npy header declaring `shape` of uint8, followed by only `payload` bytes."""
    buf = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + bytes(payload)


DAY = dt.date(2026, 3, 14)  # the publish date of the test batches


# =============================================================================================
# Benchmarks: a script of benchmarks/ imported as a module, for its smoke test.
# =============================================================================================
def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (registered, so its dataclasses resolve)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stored_text(upload: Path, rel: str) -> str:
    """One file of an upload in a local store, as its files.json lists it (each content is
    kept under its sha256: ensgan/orchestration/remote.py)."""
    listing = json.loads((upload / "files.json").read_text())
    return (upload / "sha256" / listing["files"][rel]["sha256"]).read_text()
