"""What the nightly flow's operations cost, on one small config, side by side:

    .venv/bin/python benchmarks/flow_overheads.py [--steps 300] [--members 2]

- `process`: the flow in a plain folder, members on the local process pool;
- `dvc`: the same flow in a git+DVC repository with a default remote (a local folder), so it
  also records its run in dvc.lock (`dvc commit`) and pushes the cache (`dvc push`); the
  flow's summary gives the seconds those steps took;
- `ray`: the same flow with `train.runner: ray` on a local Ray cluster (a head with no CPUs
  and a worker node with as many as the pool has), in a network and PID namespace of its own
  (tests/ray_cluster.py; needs `unshare` and user namespaces); the cluster's start-up is reported
  apart.

Every run starts from an empty project (members trained from scratch) and is timed from when
its Prefect server is up (and, for `ray`, the cluster). Prints seconds per run and the ratios
to `process`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _params(steps: int, members: int, **train: object) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    archs = ["upsample", "mlp"]
    params["members"] = {
        f"m{i}": {"arch": archs[i % 2], "seed": i + 1, "width": 16 if i % 2 == 0 else 32}
        for i in range(members)
    }
    params["train"].update(steps=steps, checkpoint_every=steps, device="cpu", **train)
    params["train"]["min_members"] = None
    params["stack"].update(burn_in=500)
    params["evaluate"].update(n_samples=300, classifier_steps=200)
    params["generate"].update(n_images=200)
    return params


def _project(where: Path, params: dict) -> Path:
    where.mkdir(parents=True)
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return where


def _sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def _flow(root: Path, env: dict) -> dict:
    code = (  # timed from when the Prefect server is up, as tests/ray_cluster.py times Ray's
        "import json, sys, time; from ensgan.orchestration.flow import run; "
        "from ensgan.orchestration.runners import shared_api\n"
        "with shared_api():\n"
        "    t = time.perf_counter(); s = run('params.yaml', sys.argv[1])\n"
        "    s['flow_seconds'] = time.perf_counter() - t\n"
        "print(json.dumps(s, default=str))"
    )
    res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                         text=True, env=env)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"the flow failed in {root}:\n{res.stderr[-3000:]}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    return {"seconds": summary["flow_seconds"], "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ensgan-bench-flow-"))
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONSAFEPATH": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    rows = {}

    plain = _project(work / "process", _params(a.steps, a.members))
    rows["process"] = _flow(plain, env)

    repo = _project(work / "dvc", _params(a.steps, a.members))
    for f in ("dvc.yaml", ".gitignore"):
        (repo / f).write_text((REPO / f).read_text())
    # the stages' code deps, as in a clone (the flow itself runs the installed package)
    shutil.copytree(REPO / "ensgan", repo / "ensgan", ignore=shutil.ignore_patterns("__pycache__"))
    _sh(repo, "git", "init", "-q")
    _sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    _sh(repo, sys.executable, "-m", "dvc", "remote", "add", "-d", "bench", str(work / "remote"))
    rows["dvc"] = _flow(repo, env)

    if not a.skip_ray:
        ray_root = _project(work / "ray", _params(a.steps, a.members, runner="ray"))
        out = work / "ray.json"
        script = f"ip link set lo up && exec {sys.executable} {REPO / 'tests/ray_cluster.py'} "
        t0 = time.perf_counter()
        subprocess.run(
            ["unshare", "--map-root-user", "--net", "--pid", "--fork", "--kill-child",
             "--mount-proc", "sh", "-c", script + f"{ray_root} {out}"],
            check=True, env=env, capture_output=True, text=True,
        )  # fmt: skip
        total = time.perf_counter() - t0
        result = json.loads(out.read_text())
        rows["ray"] = {"seconds": result["flow_seconds"], "summary": result["summary"],
                       "cluster": result["cluster_seconds"], "total": total}  # fmt: skip

    base = rows["process"]["seconds"]
    print(f"{a.members} members x {a.steps} steps, {os.cpu_count()} cores")
    for name, row in rows.items():
        line = f"{name:8s} flow {row['seconds']:7.1f} s   x{row['seconds'] / base:.2f}"
        if name == "dvc":
            line += f"   (dvc commit + push inside it: {row['summary']['dvc']['seconds']:.1f} s)"
        if name == "ray":
            line += f"   (cluster start-up apart: {row['cluster']:.1f} s)"
        print(line)


if __name__ == "__main__":
    main()
