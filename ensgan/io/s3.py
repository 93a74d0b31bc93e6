"""S3-compatible object storage (AWS, MinIO, Ceph, R2, SeaweedFS) behind the `Store` interface.

Its own module because importing boto3 is slow: a local store never pays for it.

No wait is unbounded: an endpoint that accepts the connection and then sends nothing would
otherwise hold `publish` or `batches pull` (and the nightly flow) for as long as the socket
lives. Every request has a connect and a read timeout and a few attempts with backoff; each
failed attempt is logged, a transfer shows its bytes on a terminal, and giving up is one line
that names the endpoint (never its credentials).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigParseError,
    ConnectTimeoutError,
    HTTPClientError,
    InvalidRegionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tqdm.auto import tqdm

from ensgan.errors import StorageError
from ensgan.io.keys import safe_key, safe_prefix

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def _redact(url: str | None) -> str:
    """An endpoint for messages: user:password@ stripped, in case someone put them there."""
    if not url:
        return "AWS S3"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """An S3-compatible bucket (AWS, MinIO, Ceph, R2, SeaweedFS) under an optional key prefix.

    Checksums are only sent/validated when required because many S3-compatible servers reject
    the newer default CRC trailers. A request waits at most `connect_timeout` seconds for a
    connection and `read_timeout` for each read, and is tried `max_attempts` times (botocore's
    standard mode: exponential backoff with jitter); a download broken off mid-body is fetched
    once more (its request then tried as many times). Credentials come from the usual AWS
    chain (env, profile, instance role) and never appear in our messages.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        multipart_threshold: int = 8 * MIB,
        max_attempts: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            safe_key(self.prefix)
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.max_attempts, self.read_timeout = max_attempts, read_timeout
        self.connect_timeout = connect_timeout
        self._failed = 0
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "total_max_attempts": max_attempts},  # the first counted
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # Building the client reads the AWS config (profile, region, config file) but sends
        # nothing: what fails here is the user's setup, so it is a StorageError naming it.
        try:
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        except (BotoCoreError, ValueError) as exc:  # ValueError: a bad AWS_* setting's value
            raise self._error("S3 client setup", exc) from None
        self._client.meta.events.register("needs-retry.s3", self._log_failed_attempt)
        # S3 rejects parts under 5 MiB (but the last), so only the threshold may go lower.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 * MIB),
            num_download_attempts=2,  # a body broken off mid-stream is fetched once more
        )

    @property
    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def put_file(self, local: Path, key: str) -> None:
        with (
            self._errors(f"upload to {self.url}/{safe_key(key)}"),
            _progress("upload", key, Path(local).stat().st_size) as bar,
        ):
            self._client.upload_file(
                str(local), self.bucket, self._base + key, Config=self._transfer, Callback=bar
            )

    def get_file(self, key: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer downloads to a temp name and renames, so no half files here either.
        with (
            self._errors(f"download of {self.url}/{safe_key(key)}"),
            _progress("download", key, None) as bar,
        ):
            self._client.download_file(
                self.bucket, self._base + key, str(local), Config=self._transfer, Callback=bar
            )

    def list_keys(self, prefix: str = "") -> list[str]:
        full = self._base + safe_prefix(prefix)
        keys: list[str] = []
        with self._errors(f"listing of {self.url}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                keys.extend(obj["Key"][len(self._base) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def delete(self, key: str) -> None:
        with self._errors(f"delete of {self.url}/{safe_key(key)}"):
            self._client.delete_object(Bucket=self.bucket, Key=self._base + key)

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise StorageError(f"no object {key!r} in {self.url}")
        return int(head["ContentLength"])

    def _head(self, key: str) -> dict | None:
        """The object's HEAD response; None when there is no such object."""
        action = f"lookup of {self.url}/{safe_key(key)}"
        self._failed = 0
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._base + key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise self._error(action, exc) from None
        except (BotoCoreError, Boto3Error) as exc:
            raise self._error(action, exc) from None

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        self._failed = 0  # attempts that failed to connect or read, for the give-up line
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            # boto3 wraps upload ClientErrors in S3UploadFailedError without chaining them, and
            # a download's last failure in RetriesExceededError.
            inner = exc.__context__ if isinstance(exc, Boto3Error) and exc.__context__ else exc
            if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
                inner = exc.last_exception
            raise self._error(action, inner) from None  # boto's text may hold the raw endpoint

    def _log_failed_attempt(
        self,
        attempts: int,
        operation: object = None,
        caught_exception: BaseException | None = None,
        **_: object,
    ) -> None:
        """Say so when a request's attempt failed to connect or read: a stall is not silent."""
        if isinstance(caught_exception, BotoConnectionError | HTTPClientError):
            self._failed += 1
            log.warning(
                "S3 endpoint %s: %s attempt %d of %d failed (%s)%s",
                _redact(self.endpoint_url),
                getattr(operation, "name", "request"),
                attempts,
                self.max_attempts,
                type(caught_exception).__name__,
                "; retrying" if attempts < self.max_attempts else "",
            )

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(f"{action} failed: {self._explain(exc)}")

    def _explain(self, exc: BaseException) -> str:
        """Name the likely fix; boto's own text is kept only for unrecognised errors."""
        endpoint = _redact(self.endpoint_url)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return (
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE / ~/.aws/credentials)"
            )
        if isinstance(exc, ProfileNotFound):
            return (
                f"AWS profile {exc.kwargs.get('profile')!r} (AWS_PROFILE) is not in the AWS "
                "config or credentials file: fix AWS_PROFILE or add the profile"
            )
        if isinstance(exc, ConfigParseError):
            return f"cannot parse the AWS config file {exc.kwargs.get('path')}: fix or move it"
        if isinstance(exc, InvalidRegionError):
            return f"invalid region {exc.kwargs.get('region_name')!r}: use e.g. us-east-1"
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
            connect = isinstance(exc, ConnectTimeoutError)
            what = "did not connect in" if connect else "sent nothing for"
            timeout = self.connect_timeout if connect else self.read_timeout
            return (
                f"the S3 endpoint {endpoint} {what} {timeout:g} s, {max(self._failed, 1)} times: "
                "it is stalled or overloaded; try again later, or raise storage.read_timeout "
                "/ storage.connect_timeout (ENSGAN_S3_READ_TIMEOUT, ENSGAN_S3_CONNECT_TIMEOUT)"
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return f"cannot reach the S3 endpoint {endpoint}: is it running and the URL right?"
        if not isinstance(exc, ClientError):
            text = str(exc).replace(self.endpoint_url or "\0", endpoint)
            return f"{type(exc).__name__}: {text}"
        code = _code(exc)
        if code == "NoSuchBucket":
            return f"bucket {self.bucket!r} does not exist at {endpoint}: create it first"
        if code in _DENIED:
            return (
                f"access denied to bucket {self.bucket!r} at {endpoint} ({code}): "
                "check the credentials and the bucket policy"
            )
        if code in _NOT_FOUND:
            return f"not found in bucket {self.bucket!r} at {endpoint}"
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code


@contextlib.contextmanager
def _progress(action: str, key: str, total: int | None) -> Iterator[Callable[[int], object]]:
    """A byte counter for one transfer: a bar on a terminal, nothing in logs or under tests."""
    name = key.rsplit("/", 1)[-1]
    with tqdm(
        total=total, desc=f"{action} {name}", unit="B", unit_scale=True, leave=False, disable=None
    ) as bar:
        yield bar.update
