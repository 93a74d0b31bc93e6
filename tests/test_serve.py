"""`ensgan serve` on a real Prefect server: the nightly deployment gets params.yaml's cron.

The temporary (ephemeral) server refuses schedules, so a real `prefect server start` runs on a
free loopback port, with its own PREFECT_HOME and SQLite file under tmp (never ~/.prefect).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import anyio
import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule

from tests.helpers import REPO, free_ports, venv_tool, write_tiny_project

pytestmark = pytest.mark.e2e  # real services: Prefect, DVC, S3 servers

CRON, TZ = "17 3 * * 1", "Europe/Berlin"


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ambient Prefect setting (profile, API URL), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.update(extra)
    return env


def _tail(path: Path, n: int = 6000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after a few seconds."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    # the group may outlive its leader (e.g. the server's uvicorn child)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def _spawn(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        _terminate(proc)


def _prefect() -> str:
    exe = venv_tool("prefect")
    if exe is None:
        pytest.fail("the `prefect` command is not installed beside this Python")
    return exe


def _ensgan() -> list[str]:
    exe = venv_tool("ensgan")
    return [exe] if exe else [sys.executable, "-m", "ensgan.cli"]


@contextmanager
def _prefect_server(work: Path) -> Iterator[str]:
    """A real Prefect server on a free loopback port; yields its API URL."""
    (port,) = free_ports(1)
    home = work / "prefect-home"
    home.mkdir()
    env = _clean_env(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1",
        PREFECT_UI_ENABLED="false",
    )
    log = work / "server.log"
    cmd = [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with _spawn(cmd, log, work, env) as proc:
        deadline, error = time.monotonic() + 90, None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited ({proc.returncode}); log:\n{_tail(log)}")
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError as exc:
                error = exc
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy in 90 s ({error!r}); log:\n{_tail(log)}")
            time.sleep(0.3)
        yield api


async def _poll(api: str, fn, timeout: float, what: str, logs: list[Path]):
    """Call `fn(client)` until it returns something truthy; fail with the logs otherwise."""
    deadline = time.monotonic() + timeout
    async with PrefectClient(api) as client:
        while True:
            with suppress(Exception):  # not there yet (404) or a transient error
                if result := await fn(client):
                    return result
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}:\n{_tail(p)}" for p in logs)
                pytest.fail(f"{what} not seen within {timeout:.0f} s\n{tails}")
            await anyio.sleep(0.5)


def _copy_deployment_files(root: Path) -> None:
    import shutil

    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    (root / "flows").mkdir()
    shutil.copy(REPO / "flows" / "nightly.py", root / "flows" / "nightly.py")


def _prefect_cli(root: Path, env: dict[str, str]):  # noqa: ANN202
    def prefect(*args: str) -> str:
        res = subprocess.run([_prefect(), "--no-prompt", *args], cwd=root, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, f"prefect {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    return prefect


@pytest.mark.timeout(300)
def test_serve_registers_the_cron_schedule_on_a_real_server(tmp_path: Path) -> None:
    """`ensgan serve` beside prefect.yaml's deployment: its own `nightly/serve` gets the
    cron, and the worker's `nightly/nightly` stays as `prefect deploy` made it (its pool, its
    entrypoint, unpaused), also after `serve` has stopped."""
    t0 = time.monotonic()
    root = write_tiny_project(tmp_path / "project", schedule={"cron": CRON, "timezone": TZ})
    _copy_deployment_files(root)
    with _prefect_server(tmp_path) as api:
        t_server = time.monotonic() - t0
        serve_log = tmp_path / "serve.log"
        env = _clean_env(PREFECT_HOME=str(tmp_path / "serve-home"), PREFECT_API_URL=api)
        prefect = _prefect_cli(root, env)
        prefect("work-pool", "create", "ensgan", "--type", "process")
        prefect("deploy", "--name", "nightly")
        cmd = [*_ensgan(), "serve", "--params", "params.yaml"]
        with _spawn(cmd, serve_log, root, env) as serve:
            logs = [serve_log, tmp_path / "server.log"]

            async def deployment(client):
                if serve.poll() is not None:
                    pytest.fail(f"ensgan serve exited ({serve.returncode}):\n{_tail(serve_log)}")
                return await client.read_deployment_by_name("nightly/serve")

            async def scheduled_runs(client, dep_id):
                return await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])),
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                        )
                    ),
                )

            async def check() -> tuple[object, list]:
                dep = await _poll(api, deployment, 60, "deployment nightly/serve", logs)
                runs = await _poll(
                    api, lambda c: scheduled_runs(c, dep.id), 30, "scheduled flow runs", logs
                )
                return dep, runs

            dep, runs = anyio.run(check)
            t_done = time.monotonic() - t0
            assert serve.poll() is None, _tail(serve_log)  # still serving, nothing ran
            during = anyio.run(lambda: _read_deployment(api, "nightly/nightly"))
        after = anyio.run(lambda: _read_deployment(api, "nightly/nightly"))  # serve stopped

    for worker_dep in (during, after):
        assert worker_dep.work_pool_name == "ensgan" and not worker_dep.paused
        assert worker_dep.entrypoint == "flows/nightly.py:nightly"
    assert dep.name == "serve" and dep.id != after.id
    assert len(dep.schedules) == 1
    sched = dep.schedules[0]
    assert isinstance(sched.schedule, CronSchedule)
    assert sched.schedule.cron == CRON
    assert sched.schedule.timezone == TZ
    assert sched.active
    assert not dep.paused
    assert dep.parameters["root"] == str(root.resolve())
    assert dep.parameters["params_path"] == "params.yaml"
    # Importable wherever the package is installed, whatever directory `serve` ran in.
    assert dep.entrypoint == "ensgan.orchestration.flow.nightly"

    # Upcoming runs, all at 03:17 on a Monday in Berlin, in the future, none started.
    assert len(runs) >= 3
    from zoneinfo import ZoneInfo

    for fr in runs:
        assert fr.deployment_id == dep.id
        assert fr.state.type == StateType.SCHEDULED
        when = fr.expected_start_time.astimezone(ZoneInfo(TZ))
        assert (when.weekday(), when.hour, when.minute) == (0, 3, 17), when
        assert fr.expected_start_time.timestamp() > time.time()
    print(f"server healthy after {t_server:.1f} s, deployment and runs after {t_done:.1f} s")


async def _read_deployment(api: str, name: str):  # noqa: ANN202
    async with PrefectClient(api) as client:
        return await client.read_deployment_by_name(name)


def test_serve_rejects_an_invalid_cron_without_a_server(tmp_path: Path) -> None:
    root = write_tiny_project(tmp_path / "project", schedule={"cron": "61 25 * * *"})
    # An API URL nobody listens on: a contacted server would be a connection error, not exit 2.
    (port,) = free_ports(1)
    env = _clean_env(
        PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api"
    )
    proc = subprocess.run(
        [*_ensgan(), "serve", "--params", "params.yaml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "schedule.cron" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "prefect-home").exists() or not any(
        (tmp_path / "prefect-home").glob("*.db")
    )


@pytest.mark.timeout(420)
def test_a_worker_runs_the_deployment_from_prefect_yaml(tmp_path: Path) -> None:
    """`prefect deploy` reads prefect.yaml; a real worker of a process pool picks up a run of
    the `nightly` deployment, which trains, evaluates and publishes a tiny project."""
    import json

    root = write_tiny_project(tmp_path / "project")
    _copy_deployment_files(root)
    assert subprocess.run([*_ensgan(), "validate"], cwd=root, capture_output=True).returncode == 0
    with _prefect_server(tmp_path) as api:
        env = _clean_env(PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_API_URL=api)
        prefect = _prefect_cli(root, env)

        prefect("work-pool", "create", "ensgan", "--type", "process")
        prefect("deploy", "--name", "nightly")
        prefect("deployment", "run", "nightly/nightly")
        worker_log = tmp_path / "worker.log"
        worker_env = {**env, "PREFECT_HOME": str(tmp_path / "worker-home")}
        cmd = [_prefect(), "worker", "start", "--pool", "ensgan", "--type", "process"]
        with _spawn(cmd, worker_log, root, worker_env) as worker:
            logs = [worker_log, tmp_path / "server.log"]

            async def finished(client):
                if worker.poll() is not None:
                    pytest.fail(f"the worker exited ({worker.returncode}):\n{_tail(worker_log)}")
                dep = await client.read_deployment_by_name("nightly/nightly")
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
                )
                done = [r for r in runs if r.state and r.state.is_final()]
                return (dep, done) if done else None

            dep, done = anyio.run(lambda: _poll(api, finished, 300, "a finished run", logs))

    assert dep.work_pool_name == "ensgan" and dep.entrypoint == "flows/nightly.py:nightly"
    assert [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules] == [("0 2 * * *", "UTC")]
    assert done[0].state.type == StateType.COMPLETED, _tail(worker_log)
    receipt = json.loads((root / "outputs" / "published.json").read_text())
    assert receipt["status"] == "published" and receipt["gate"]["decision"] == "promoted"
    assert (root / "store" / receipt["prefix"] / "manifest.jsonl").is_file()


def test_validate_refuses_a_prefect_yaml_off_the_params_schedule(tmp_path: Path) -> None:
    import shutil

    root = write_tiny_project(tmp_path / "project", schedule={"cron": CRON, "timezone": TZ})
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    res = subprocess.run([*_ensgan(), "validate"], cwd=root, capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f'set prefect.yaml\'s schedules to `- cron: "{CRON}"` with `timezone: {TZ}`' in (
        res.stderr
    )
