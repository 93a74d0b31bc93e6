"""The temporary Prefect server of `ensgan run`: it ends with the run, and the run with it.

Started through `python -m ensgan.children`, the server gets the parent-death signal: kill -9
of `ensgan run` takes it along. Should the server exit first, every training loop saves its
checkpoint at its next step, the member processes exit, and so does `ensgan run`, with one
line: Prefect's clients would otherwise retry the server that is gone for minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from multiprocessing import active_children

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import get_current_settings

from ensgan import stopping
from ensgan.children import GRACE_SECONDS, POLL_SECONDS, REPORT_SECONDS, launcher


class TemporaryServer(SubprocessASGIServer):
    """Prefect's temporary server, started so that it dies with the thread that starts it
    (ensgan/children.py): kill -9 of `ensgan run` takes it along. The command and environment
    are Prefect's own (SubprocessASGIServer._run_uvicorn_command). It is kept where Prefect
    looks for its own (SubprocessASGIServer._instances, as prefect_test_harness does), so that
    a Prefect thread that sees no API URL uses it rather than start a second server."""

    def _run_uvicorn_command(self) -> subprocess.Popen:
        app, where = "prefect.server.api.server:create_app", str(prefect.__module_path__.parent)
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", where, "--factory", app,
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error",
                   "--lifespan", "on"]  # fmt: skip
        env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}  # fmt: skip
        settings = get_current_settings().to_environment_variables(exclude_unset=True)
        # A session of its own: a terminal's Ctrl-C reaches the run, which stops and records
        # the stop through the server, not the server first (it still dies with the run).
        return subprocess.Popen(
            launcher(uvicorn), env={**os.environ, **env, **settings}, start_new_session=True
        )


def start_server(done: threading.Event) -> TemporaryServer:
    """Start the server, and watch it until `done` is set; the calling thread must wait for
    the run (the server dies with it)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
    server = TemporaryServer()
    server.start(timeout=120)
    if server.server_process is not None:
        args = (server.server_process, done)
        watch = threading.Thread(target=watch_server, args=args, name="ensgan-server-watch")
        watch.daemon = True
        watch.start()
    return server


def watch_server(proc: subprocess.Popen, done: threading.Event) -> None:
    """Should the temporary server exit before the run is `done`, stop the run: every training
    loop saves its checkpoint at its next step and the member processes exit
    (ensgan/children.py), then this process exits with one line, rather than let Prefect retry
    a server that is gone for minutes."""
    while not done.wait(POLL_SECONDS):
        if proc.poll() is not None:
            break
    if done.is_set():  # the run ended (set before the server is stopped)
        return
    why = f"the temporary Prefect server (pid {proc.pid}) exited with status {proc.returncode}"
    stopping.request(why)
    deadline = time.monotonic() + GRACE_SECONDS + REPORT_SECONDS
    while (stopping.looping() or active_children()) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    print(
        f"error: {why} while the flow ran: stopped; every member in training kept a "
        "checkpoint at the step it reached, and the next `ensgan run` resumes them",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)  # Prefect's clean-up would wait on the server that is gone; every write is
    # safe to interrupt (ensgan/io/files.py)
