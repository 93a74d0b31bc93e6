"""benchmarks/device_check.sh, the one prepared GPU check, as CI runs it: on a machine without
CUDA (here made so for the child even where there is one) it runs the CPU-runnable parts at
CPU sizes, says "no CUDA device", writes its figures where it is told, and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ensgan.registry import ARCHS

REPO = Path(__file__).resolve().parent.parent


def test_the_device_check_runs_its_cpu_parts_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ENSGAN_DEVICE_RESULTS", None)
    res = subprocess.run(
        [str(REPO / "benchmarks" / "device_check.sh"), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no CUDA device" in res.stdout
    report = json.loads((out / "device_check.json").read_text())
    assert report["machine"]["gpus"] == 0 and report["sizes"]["device"] == "cpu"
    timed = {(r["arch"], r["precision"]) for r in report["step_times"] if r["ms_per_step"] > 0}
    assert timed == {(a, p) for a in ARCHS for p in ("fp32", "bf16")}
    assert [r["members"] for r in report["sharing"]] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in report["sharing"])
    toy = {r["batched"]: r for r in report["toy"]}
    assert (toy[True]["trials"], toy[True]["updates"], toy[False]["updates"]) == (2, 200, 20)
    assert all(r["seconds"] > 0 and {"modes", "hq", "kl"} <= set(r) for r in toy.values())
    (compiled,) = report["compile"]  # one DCGAN on a CPU: the compiled path runs
    assert compiled["arch"] == "dcgan" and compiled["compiled_ms"] > 0, compiled
    md = (out / "device_check.md").read_text()
    assert md.startswith("# Device check") and "## Members sharing one device" in md
    assert "## torch.compile" in md
