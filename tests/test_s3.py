"""No S3 wait is unbounded: an endpoint that accepts connections and then sends nothing makes
`publish` and `batches pull` give up after the configured attempts, with one line naming the
endpoint; a stall that passes is retried through. The endpoint here is a real TCP server in
the test that never answers, or a proxy to a real SeaweedFS that stops forwarding once."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.errors import StorageError
from ensgan.io.batches import publish_batch, pull_batch, verify_batch
from ensgan.io.s3 import S3Store
from tests.helpers import DAY, make_batch

FAST = {"max_attempts": 2, "connect_timeout": 2.0, "read_timeout": 0.5}


class StallingEndpoint:
    """A loopback TCP server that accepts every connection and answers nothing (it reads and
    drops what it is sent), or with `upstream` a proxy that forwards both ways until `after`
    bytes have gone back to clients, then holds that one connection open, silent, once."""

    def __init__(self, upstream: tuple[str, int] | None = None, after: int = 0) -> None:
        self.upstream, self.after = upstream, after
        self.connections = 0
        self.stalled = threading.Event()
        self._passed = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(conn)
            target = self._drain if self.upstream is None else self._proxy
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket, into: socket.socket | None = None) -> None:
        """Read until the peer closes; forward to `into` when given, else drop it."""
        try:
            while data := conn.recv(65536):
                if into is not None:
                    into.sendall(data)
        except OSError:
            pass

    def _proxy(self, conn: socket.socket) -> None:
        up = socket.create_connection(self.upstream)
        with self._lock:
            self._sockets.append(up)
        threading.Thread(target=self._drain, args=(conn, up), daemon=True).start()
        try:
            while data := up.recv(65536):
                with self._lock:
                    stall = not self.stalled.is_set() and self._passed + len(data) > self.after
                    keep = self.after - self._passed if stall else len(data)
                    self._passed += keep
                    if stall:
                        self.stalled.set()
                conn.sendall(data[:keep])
                if stall:
                    return  # both sockets stay open and silent until close()
        except OSError:
            pass

    def close(self) -> None:
        self._closing.set()
        self._server.close()
        with self._lock:
            for s in self._sockets:
                s.close()


@pytest.fixture
def stalled(_s3_env: None) -> Iterator[StallingEndpoint]:
    endpoint = StallingEndpoint()
    yield endpoint
    endpoint.close()


def _store(endpoint: str, bucket: str = "some-bucket", **kw: object) -> S3Store:
    return S3Store(bucket, "p", endpoint, "us-east-1", **{**FAST, **kw})


@pytest.mark.parametrize(
    ("call", "attempts"),
    [
        (lambda store, tmp: store.list_keys(), 2),
        (lambda store, tmp: store.exists("k"), 2),
        (lambda store, tmp: store.put_file(make_batch(tmp)[0] / "batch.json", "k"), 2),
        # s3transfer fetches a download once more (a body broken off mid-stream), its
        # request tried as many times again
        (lambda store, tmp: store.get_file("k", tmp / "k"), 4),
    ],
    ids=["listing", "lookup", "upload", "download"],
)
def test_a_stalled_endpoint_is_given_up_on_in_one_line_naming_it(
    stalled: StallingEndpoint, tmp_path: Path, call: Callable, attempts: int, caplog
) -> None:
    store = _store(stalled.url)
    with caplog.at_level(logging.WARNING, "ensgan.io.s3"), pytest.raises(StorageError) as err:
        call(store, tmp_path)
    msg = str(err.value)
    assert f"the S3 endpoint {stalled.url} sent nothing for 0.5 s, {attempts} times" in msg, msg
    assert "\n" not in msg and "storage.read_timeout" in msg
    assert stalled.connections == attempts  # one per attempt: retried, and then no more
    warned = [r.getMessage() for r in caplog.records]
    assert sum("attempt 1 of 2 failed (ReadTimeoutError); retrying" in w for w in warned) == (
        attempts // 2
    ), warned
    assert not list(tmp_path.glob("k*"))  # no half download left behind


def test_the_timeout_line_never_holds_credentials(stalled: StallingEndpoint) -> None:
    host = stalled.url.removeprefix("http://")
    store = _store(f"http://AKIAHIDDENKEY:hidden-s3cr3t@{host}")
    with pytest.raises(StorageError) as err:
        store.list_keys()
    assert f"http://{host} sent nothing" in str(err.value)
    assert "hidden-s3cr3t" not in str(err.value) and "AKIAHIDDENKEY" not in str(err.value)


def test_publish_to_a_stalled_endpoint_fails_instead_of_hanging(
    stalled: StallingEndpoint, tmp_path: Path
) -> None:
    batch, _ = make_batch(tmp_path)
    with pytest.raises(
        StorageError, match=f"listing of s3://some-bucket/p failed: the S3 endpoint {stalled.url}"
    ):
        publish_batch(_store(stalled.url), batch, DAY)


def test_batches_pull_from_a_stalled_endpoint_is_one_line_and_exit_2(
    stalled: StallingEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer without params.yaml sets the waits in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENSGAN_S3_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("ENSGAN_S3_MAX_ATTEMPTS", "2")
    args = ["batches", "pull", "run-1", "dest", "--store", "s3://some-bucket/p"]
    res = CliRunner().invoke(app, [*args, "--endpoint-url", stalled.url])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{stalled.url} sent nothing for 0.5 s, 2 times" in errors[0]
    assert "Traceback" not in res.output and stalled.connections == 2
    assert not (tmp_path / "dest" / "run-1").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("after", [600, 3000, 9000])
def test_a_stall_mid_transfer_is_retried_and_the_pull_verifies(
    seaweedfs, s3_bucket: Callable, tmp_path: Path, after: int
) -> None:
    """The proxy forwards to SeaweedFS until `after` bytes went back, then one connection
    goes silent (inside a listing, a header or a shard, by where the count falls): the
    request is retried on a fresh connection and the pull completes, every checksum checked."""
    bucket = s3_bucket(seaweedfs)
    batch, _ = make_batch(tmp_path / "out", n=24)
    publish_batch(S3Store(bucket, "p", seaweedfs.endpoint_url, "us-east-1"), batch, DAY)
    host, port = seaweedfs.endpoint_url.removeprefix("http://").split(":")
    proxy = StallingEndpoint(upstream=(host, int(port)), after=after)
    try:
        store = _store(proxy.url, bucket, max_attempts=3)
        pulled = pull_batch(store, "run-1", tmp_path / "dest")
    finally:
        proxy.close()
    assert proxy.stalled.is_set() and proxy.connections >= 2
    assert verify_batch(pulled) == 24
