"""Run the nightly flow with `train.runner: ray` on a real local Ray cluster; for
tests/test_ray.py, which starts this in namespaces of its own:

    unshare --map-root-user --net --pid --fork --kill-child --mount-proc \
        sh -c 'ip link set lo up && exec python tests/ray_cluster.py PROJECT OUT.json'

Ray binds the machine's network interfaces whatever address it is given, and tests may only
talk on loopback: in a network namespace of its own there is nothing else to bind. In a PID
namespace of its own, every process Ray started dies with this one (no `ray stop`, which
kills Ray processes machine-wide by name). The user namespace (--map-root-user) makes both
possible without root.

The cluster: a head with no CPUs (the driver's node: no member can run there) and a worker
node with two, started from another working directory. The Prefect API (a temporary server)
is started first, so the Ray processes inherit its URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, cwd: Path) -> None:
    ray = Path(sys.executable).parent / "ray"
    res = subprocess.run([str(ray), *args], cwd=cwd, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        raise SystemExit(f"ray {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")


@contextmanager
def local_cluster() -> Iterator[str]:
    """A Prefect API, then a head with no CPUs and a worker node with two, each started from a
    working directory of its own; yields the cluster's address, also set as RAY_ADDRESS (what
    a driver started from here finds it by). For tests/ray_stop.py too: one start-up, one
    place that knows how. Ends with the API; the Ray processes end with the PID namespace."""
    from ensgan.orchestration.runners import own_ray_auth, shared_api

    work = Path(tempfile.mkdtemp(prefix="ensgan-ray-"))
    own_ray_auth(work / "auth")  # whatever ~/.ray holds: the nodes and driver inherit it
    head_dir, worker_dir = work / "head", work / "worker"
    head_dir.mkdir()
    worker_dir.mkdir()
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    with shared_api():  # PREFECT_API_URL is set before Ray's processes start
        _ray("start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
             f"--temp-dir={work / 'ray'}", *common, cwd=head_dir)  # fmt: skip
        _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=2", *common, cwd=worker_dir)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        yield os.environ["RAY_ADDRESS"]


def main(project: Path, out: Path) -> None:
    from ensgan.orchestration.flow import run

    t0 = time.monotonic()
    with local_cluster() as address:
        t_cluster = time.monotonic() - t0
        summary = run(params_path="params.yaml", root=str(project))
        import ray

        ray.init(address=address)  # the runner disconnected when it ended
        nodes = [
            {"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0)}
            for n in ray.nodes()
            if n["Alive"]
        ]
        ray.shutdown()
    out.write_text(
        json.dumps(
            {
                "summary": summary,
                "nodes": nodes,
                "cluster_seconds": t_cluster,
                "flow_seconds": time.monotonic() - t0 - t_cluster,
            },
            default=str,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
