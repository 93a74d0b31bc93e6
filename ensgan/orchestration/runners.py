"""Where the flow's tasks run: a process pool (one torch thread per core it gets) or threads,
and one Prefect API shared by the flow and its worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from ensgan.config import Params


def worker_count(params: Params) -> int:
    n = params.train.workers or (os.cpu_count() or 1)
    return max(1, min(n, len(params.members)))


def make_runner(params: Params) -> ProcessPoolTaskRunner | ThreadPoolTaskRunner:
    n = worker_count(params)
    return ProcessPoolTaskRunner(max_workers=n) if n > 1 else ThreadPoolTaskRunner(max_workers=1)


@contextmanager
def shared_api() -> Iterator[str]:
    """One Prefect API for the flow and its worker processes.

    With no PREFECT_API_URL configured, Prefect starts a temporary server per process; worker
    processes would each start their own on the same SQLite file. Start one here and hand its
    URL to the workers through the environment they inherit.
    """
    url, server = PREFECT_API_URL.value(), None
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
        server = SubprocessASGIServer()
        server.start(timeout=120)
        url = server.api_url
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        if server is not None:
            APILogWorker.drain_all(timeout=10)  # send the last logs while the server is up
            server.stop()
