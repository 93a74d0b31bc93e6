"""How fast the `ensgan` command starts, against the libraries it no longer imports up front.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]

Times `ensgan --help`, `ensgan validate` and `ensgan batches ls` (on an empty local store) as
subprocesses, median of several runs, and beside them a bare `import torch, sklearn, prefect`:
what every command paid before heavy imports moved inside the commands that need them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENSGAN = str(Path(sys.executable).parent / "ensgan")


def _median(cmd: list[str], repeats: int, cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("ensgan --help", [ENSGAN, "--help"]),
            ("ensgan validate", [ENSGAN, "validate", "--params", str(REPO / "params.yaml")]),
            ("ensgan batches ls (local)", [ENSGAN, "batches", "ls", "--store", tmp]),
            (
                "import torch, sklearn, prefect",
                [sys.executable, "-c", "import torch, sklearn, prefect"],
            ),
        ]
        times = {name: _median(cmd, a.repeats, Path(tmp)) for name, cmd in rows}
    heavy = times["import torch, sklearn, prefect"]
    print(f"median of {a.repeats} runs each")
    for name, t in times.items():
        print(f"{name:<32} {t:6.2f} s   {t / heavy:5.2f} x the heavy imports")


if __name__ == "__main__":
    main()
