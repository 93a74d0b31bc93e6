"""The one prepared check for a lent GPU machine (issue 22), run by benchmarks/device_check.sh.

    python benchmarks/device_check.py [--out DIR] [--quick]

It needs no Prefect, DVC or boto3, prints one table, and writes its figures to DIR
(default: $ENSGAN_DEVICE_RESULTS, else device-results/): `device_check.json` and
`device_check.md`. On CUDA:
1. `pytest -m gpu` (tests/test_gpu.py): a member trains on CUDA and resumes bit-exactly, fp32
   and bf16; the placement over the visible devices;
2. a member's training step (ensgan/gan/schedule.py `step_seconds`: the loop's own step) at
   16, 32 and 64 px for each architecture, fp32 against bf16, batch 64 and 256;
3. 1, 2, 4 and 8 members sharing one GPU at once, trained by `ensgan train`'s own pool
   (ensgan/pipeline/train.py `train_parallel`): the aggregate images per second against one;
4. the toy benchmark (`ensgan bench modes`' own run) on the ring, the mixture row, batched at
   the paper's length (5 trials of 400,000 updates), and unbatched at a tenth, with times;
5. a step eager against under `torch.compile` (DCGAN and upsample, 32 px, batch 256).
The figures are written after every part, so a run cut off by its limit keeps what it has.
Without CUDA it says "no CUDA device" and runs the same parts at CPU sizes (16 px, batch 64,
a few steps; 1 and 2 members; a short toy run), and exits 0: CI runs it so (tests/
test_device_check.py). `--quick` cuts the CUDA sizes too, for a first look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ensgan.config import DataConfig, MemberConfig, TrainConfig, parse_params
from ensgan.registry import ARCHS

REPO = Path(__file__).resolve().parent.parent
SHOWN = {"dataset", "method", "trial", "seconds", "steps_trained"}  # the rest: the scores


@dataclass(frozen=True)
class Sizes:
    """How much of each part runs: the GPU's full sizes, or the CPU's (and --quick's)."""

    device: str
    image_sizes: tuple[int, ...]
    batches: tuple[int, ...]
    timed_steps: int
    sharing: tuple[int, ...]
    sharing_steps: int
    toy_steps: int
    toy_trials: int = 5
    width: int = 32  # the members' base width (the CPU's is smaller: the check, not a figure)

    @classmethod
    def for_device(cls, cuda: bool, quick: bool) -> Sizes:
        if cuda and not quick:
            return cls("cuda", (16, 32, 64), (64, 256), 20, (1, 2, 4, 8), 400, 400_000)
        if cuda:
            return cls("cuda", (32,), (64,), 10, (1, 2), 100, 20_000)
        return cls("cpu", (16,), (64,), 2, (1, 2), 20, 200, toy_trials=2, width=8)


def gpu_tests(out: Path) -> dict:
    """`pytest -m gpu` on tests/test_gpu.py alone (the suite's conftest needs S3 and Prefect),
    its summary line and exit status."""
    junit = out / "pytest-gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--noconftest", "-p",
           "no:cacheprovider", "-o", "addopts=", f"--junitxml={junit}",
           "tests/test_gpu.py"]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = (res.stdout + res.stderr).strip().splitlines()
    (out / "pytest-gpu.log").write_text(res.stdout + res.stderr)
    return {"rc": res.returncode, "summary": lines[-1] if lines else "", "seconds":
            round(time.perf_counter() - t0, 1)}  # fmt: skip


def step_times(sizes: Sizes) -> pd.DataFrame:
    """ms per training step and images per second, per architecture, size, precision and
    batch (an architecture that cannot run a size says so in its row)."""
    from ensgan.gan.schedule import step_seconds

    rows = []
    for arch in ARCHS:
        for size in sizes.image_sizes:
            for batch in sizes.batches:
                for precision in ("fp32", "bf16"):
                    train = TrainConfig(device=sizes.device, batch_size=batch, precision=precision)
                    row = {"arch": arch, "px": size, "batch": batch, "precision": precision}
                    try:
                        member = MemberConfig(arch=arch, width=sizes.width)
                        s = step_seconds(member, train, size, 1, sizes.timed_steps)
                        row |= {"ms_per_step": round(s * 1000, 2), "images_per_s": round(batch / s)}
                    except (RuntimeError, ValueError) as exc:  # out of memory, a size it lacks
                        row |= {"error": str(exc).splitlines()[0][:80]}
                    rows.append(row)
    return pd.DataFrame(rows)


def compile_times(sizes: Sizes) -> pd.DataFrame:
    """ms per training step eager against under `torch.compile` (step_seconds' `compiled`),
    for the convolutional members at the check's largest batch: whether compiling helps (on
    CUDA at 32 px, fp32 and bf16; on a CPU one DCGAN at its sizes, which also proves the
    path)."""
    from ensgan.gan.schedule import step_seconds

    cuda = sizes.device == "cuda"
    archs = ("dcgan", "upsample") if cuda and len(sizes.image_sizes) > 1 else ("dcgan",)
    size, batch = (32 if cuda else sizes.image_sizes[0]), sizes.batches[-1]
    rows = []
    for arch in archs:
        for precision in ("fp32", "bf16") if cuda else ("fp32",):
            train = TrainConfig(device=sizes.device, batch_size=batch, precision=precision)
            member = MemberConfig(arch=arch, width=sizes.width)
            row = {"arch": arch, "px": size, "batch": batch, "precision": precision}
            try:
                eager = step_seconds(member, train, size, 1, sizes.timed_steps)
                t0 = time.perf_counter()
                comp = step_seconds(member, train, size, 1, sizes.timed_steps, compiled=True)
                row |= {"eager_ms": round(eager * 1000, 2), "compiled_ms": round(comp * 1000, 2),
                        "speedup": round(eager / comp, 2),
                        "compile_and_time_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - no compiler, no Triton: the row says so
                row |= {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"}
            rows.append(row)
    return pd.DataFrame(rows)


def sharing(sizes: Sizes, work: Path) -> pd.DataFrame:
    """n DCGAN members on one device at once through `ensgan train`'s pool: each member's
    images per second between its first and last loss-log rows (its training loop alone, not
    the process start or the export), summed, against one member's alone."""
    from ensgan.data.prepared import prepare
    from ensgan.gan.losslog import read_log
    from ensgan.gan.member import LOSSES_CSV
    from ensgan.layout import Layout
    from ensgan.pipeline.train import train_parallel

    data = DataConfig(image_size=32)
    rows, alone = [], None
    for n in sizes.sharing:
        layout = Layout(work / f"share-{n}")
        prepare(data, layout.prepared)
        members = {f"m{i}": {"arch": "dcgan", "seed": i, "width": sizes.width} for i in range(n)}
        train = {"steps": sizes.sharing_steps, "checkpoint_every": sizes.sharing_steps,
                 "log_every": max(1, sizes.sharing_steps // 10), "device": sizes.device,
                 "members_per_gpu": n, "workers": n}  # fmt: skip
        params = parse_params({"data": data.model_dump(), "members": members, "train": train})
        t0 = time.perf_counter()
        _, failures = train_parallel(params, layout, list(members))
        wall = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"{n} members sharing the device: {failures}")
        total = 0.0
        for name in members:
            log = read_log(layout.member(name) / LOSSES_CSV)
            first, last = log[0], log[-1]
            images = (last["step"] - first["step"]) * params.train.batch_size
            total += images / (last["seconds"] - first["seconds"])
        alone = alone or total
        rows.append({"members": n, "images_per_s": round(total), "vs_one": round(total / alone, 2),
                     "per_member": round(total / n), "wall_s": round(wall, 1)})  # fmt: skip
    return pd.DataFrame(rows)


def toy(sizes: Sizes, work: Path) -> pd.DataFrame:
    """`ensgan bench modes`' own run on the ring, the mixture row (K members): batched (every
    trial's members one stacked model) at `toy_steps` updates per trial (on CUDA the paper's
    400,000), and unbatched, one trial at a tenth of that, for the speed of each."""
    from ensgan.bench.modes import resolve, run

    rows = []
    for batched, trials, steps in ((True, sizes.toy_trials, sizes.toy_steps),
                                   (False, 1, sizes.toy_steps // 10)):  # fmt: skip
        settings = resolve("ring", trials, steps=steps, methods=["mixture"],
                           device=sizes.device, batched=batched)  # fmt: skip
        t0 = time.perf_counter()
        results = run(settings, work / f"modes-{batched}", log=lambda line: None)
        seconds = time.perf_counter() - t0
        mean = results.drop(columns=list(SHOWN & set(results.columns))).mean().to_dict()
        rows.append({"batched": batched, "trials": trials, "updates": steps,
                     "seconds": round(seconds, 1),
                     "updates_per_s": round(steps * trials / seconds), **mean})  # fmt: skip
    return pd.DataFrame(rows)


def machine() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "device": torch.cuda.get_device_name(0) if cuda else "no CUDA device",
        "gpus": torch.cuda.device_count() if cuda else 0,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": _commit(),
    }


def _commit() -> str:
    """The checkout's commit; a copied tree without git says $ENSGAN_COMMIT (or unknown)."""
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True)  # fmt: skip
    except OSError:
        res = None
    sha = res.stdout.strip() if res is not None and res.returncode == 0 else ""
    return sha or os.environ.get("ENSGAN_COMMIT", "unknown")


PARTS = (  # report key, title: in the order they run (the cheap and decisive ones first)
    ("step_times", "Step times"),
    ("sharing", "Members sharing one device"),
    ("toy", "Toy benchmark"),
    ("compile", "torch.compile"),
)


def write_report(report: dict, out: Path) -> None:
    """device_check.json and .md as far as the check has got: rewritten after every part,
    so a run stopped by its time limit still leaves what it measured."""
    (out / "device_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    info = report["machine"]
    md = [f"# Device check, {info['date']}: {info['device']}", "", json.dumps(info), "",
          "## pytest -m gpu", "", report["pytest_gpu"]["summary"], ""]  # fmt: skip
    for key, title in PARTS:
        if key in report:
            seconds = report["part_seconds"][key]
            md += [f"## {title} ({seconds} s)", "", pd.DataFrame(report[key]).to_markdown(
                index=False), ""]  # fmt: skip
    (out / "device_check.md").write_text("\n".join(md))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("ENSGAN_DEVICE_RESULTS",
                    "device-results")))  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="smaller sizes on CUDA too")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    sizes = Sizes.for_device(info["gpus"] > 0, a.quick)
    print(f"# device check: {info['device']} ({info['gpus']} GPU(s), {info['cpus']} CPUs, "
          f"torch {info['torch']}, commit {info['commit']})", flush=True)  # fmt: skip
    if not info["gpus"]:
        print("no CUDA device: the CPU-runnable parts only, at CPU sizes", flush=True)
    report: dict = {"machine": info, "sizes": sizes.__dict__, "part_seconds": {}}
    report["pytest_gpu"] = gpu_tests(a.out) if info["gpus"] else {"summary": "no CUDA device"}
    print(f"pytest -m gpu: {report['pytest_gpu']['summary']}", flush=True)
    write_report(report, a.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calls = {
            "step_times": lambda: step_times(sizes),
            "sharing": lambda: sharing(sizes, work),
            "toy": lambda: toy(sizes, work),
            "compile": lambda: compile_times(sizes),
        }
        for key, title in PARTS:
            t0 = time.perf_counter()
            result = calls[key]()
            seconds = report["part_seconds"][key] = round(time.perf_counter() - t0, 1)
            report[key] = result.to_dict(orient="records")
            print(f"\n{title} ({seconds} s)\n{result.to_markdown(index=False)}", flush=True)
            write_report(report, a.out)
    print(f"written: {a.out / 'device_check.md'}, {a.out / 'device_check.json'}")
    failed = info["gpus"] and report["pytest_gpu"]["rc"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
