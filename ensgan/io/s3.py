"""S3-compatible object storage (AWS, MinIO, Ceph, R2, SeaweedFS) behind the `Store` interface.

Its own module because importing boto3 is slow: a local store never pays for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigParseError,
    HTTPClientError,
    InvalidRegionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ensgan.errors import StorageError
from ensgan.io.keys import safe_key, safe_prefix

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
    the newer default CRC trailers; retries use botocore's standard mode. Credentials come from
    the usual AWS chain (env, profile, instance role) and never appear in our messages.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        multipart_threshold: int = 8 * MIB,
        max_attempts: int = 5,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            safe_key(self.prefix)
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        # Building the client reads the AWS config (profile, region, config file) but sends
        # nothing: what fails here is the user's setup, so it is a StorageError naming it.
        try:
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        except (BotoCoreError, ValueError) as exc:  # ValueError: a bad AWS_* setting's value
            raise self._error("S3 client setup", exc) from None
        # S3 rejects parts under 5 MiB (but the last), so only the threshold may go lower.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 * MIB),
        )

    @property
    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def put_file(self, local: Path, key: str) -> None:
        with self._errors(f"upload to {self.url}/{safe_key(key)}"):
            self._client.upload_file(
                str(local), self.bucket, self._base + key, Config=self._transfer
            )

    def get_file(self, key: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer downloads to a temp name and renames, so no half files here either.
        with self._errors(f"download of {self.url}/{safe_key(key)}"):
            self._client.download_file(self.bucket, self._base + key, str(local))

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

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise StorageError(f"no object {key!r} in {self.url}")
        return int(head["ContentLength"])

    def _head(self, key: str) -> dict | None:
        """The object's HEAD response; None when there is no such object."""
        action = f"lookup of {self.url}/{safe_key(key)}"
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
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            # boto3 wraps upload ClientErrors in S3UploadFailedError without chaining them.
            inner = exc.__context__ if isinstance(exc, Boto3Error) and exc.__context__ else exc
            raise self._error(action, inner) from None  # boto's text may hold the raw endpoint

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
