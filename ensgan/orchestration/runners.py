"""Where the flow's tasks run: a process pool (one torch thread per core it gets) or threads,
and one Prefect API shared by the flow and its worker processes; both end with the run."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from ensgan import stopping
from ensgan.children import init_member_process
from ensgan.config import Params
from ensgan.errors import ConfigError
from ensgan.gan.placement import here, worker_slots


class OrderedProcessPoolTaskRunner(ProcessPoolTaskRunner):
    """A process pool that starts tasks in the order they were submitted.

    Prefect's process pool resolves each submission's inputs on a pool of threads before it
    hands the task to the processes, so two submissions can overtake each other (seen: the
    third member starting before the second). The flow plans the members' order, so here the
    inputs are resolved on one thread: tasks reach the first-come-first-served process pool in
    submission order. Only the flow's train tasks, which wait on no other task, use the pool.
    """

    def __enter__(self) -> Self:
        super().__enter__()
        resolver = getattr(self, "_resolver_executor", None)
        if isinstance(resolver, ThreadPoolExecutor):
            resolver.shutdown(wait=True)
            self._resolver_executor = ThreadPoolExecutor(max_workers=1)
        else:  # a Prefect that resolves differently: run, in whatever order it gives
            logging.getLogger(__name__).warning(
                "cannot keep the members' planned order on this Prefect version"
            )
        return self


RAY_AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # Ray's token auth
RAY_TOKEN_DIR = ".ensgan-ray"  # under the project: the token of the Ray ensgan starts there


def own_ray_auth(token_dir: Path, env: MutableMapping[str, str] = os.environ) -> None:
    """Token auth with a token of its own for a Ray cluster started here (ray.init without
    an address, or tests/ray_cluster.py's nodes), set in `env` before any Ray process starts,
    which they inherit: Ray otherwise reads ~/.ray/auth_token, and a token left there by
    other use of Ray locks a fresh cluster's own driver out (InvalidAuthToken). Auth the
    user configured (any RAY_AUTH_* set) is left as it is. The token file is mode 0600."""
    if any(env.get(k) for k in RAY_AUTH):
        return
    token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = token_dir / "auth_token"
    if not token.is_file() or not token.read_text().strip():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(token.resolve())


def make_runner(params: Params, root: str) -> TaskRunner:
    """The runner of the flow's member tasks: Ray's (train.runner: ray; without an address it
    starts Ray here, with auth of its own: own_ray_auth), else a process pool
    of the placement's workers (ensgan/gan/placement.py: on CUDA each sees only its GPU) whose
    processes end with this one and hold the writers lock of the project at `root`
    (ensgan/children.py), or one thread of this process when one worker here will do."""
    if params.train.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ConfigError(
                "train.runner: ray needs Ray and prefect-ray: pip install 'ensgan[ray]'"
            ) from None
        address = params.train.ray_address or os.environ.get("RAY_ADDRESS") or None
        if address is None:  # ray.init starts a cluster on this machine: auth of its own
            own_ray_auth(Path(root) / RAY_TOKEN_DIR)
        return RayTaskRunner(address=address)
    placement = here(params.train, len(params.members))
    if placement.in_process:
        return ThreadPoolTaskRunner(max_workers=1)
    return OrderedProcessPoolTaskRunner(
        max_workers=placement.workers,
        initializer=init_member_process,
        initargs=(os.getpid(), root, stopping.shared_event(), placement, worker_slots()),
    )


@contextmanager
def shared_api() -> Iterator[str]:
    """One Prefect API for the flow and its worker processes.

    With no PREFECT_API_URL configured, Prefect starts a temporary server per process; worker
    processes would each start their own on the same SQLite file. Start one here and hand its
    URL to the workers through the environment they inherit. The server dies with this thread,
    and should it die first, the run ends (ensgan/orchestration/server.py).
    """
    url, server, done = PREFECT_API_URL.value(), None, threading.Event()
    if not url:
        from ensgan.orchestration.server import start_server

        server = start_server(done)
        url = server.api_url
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        done.set()
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        if server is not None:
            APILogWorker.drain_all(timeout=10)  # send the last logs while the server is up
            server.stop()
