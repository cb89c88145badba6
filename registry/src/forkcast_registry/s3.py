"""The one place that talks to S3: a boto3 client with bounded retries, and S3 errors mapped to registry errors.

Only a handful of calls are used (conditional put, get, head, list, delete), all of which AWS, SeaweedFS and
MinIO implement; tests run them against a real SeaweedFS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from forkcast_registry.errors import BucketMissingError, RegistryError, RegistryUnavailableError
from forkcast_registry.settings import RegistrySettings

_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_precondition_failed(exc: ClientError) -> bool:
    return http_status(exc) == 412 or error_code(exc) in {"PreconditionFailed", "ConditionalRequestConflict"}


def is_not_found(exc: ClientError) -> bool:
    return http_status(exc) == 404 or error_code(exc) in {"NoSuchKey", "404", "NotFound"}


@dataclass
class S3Store:
    """A bucket behind a boto3 client; methods raise registry errors, never raw botocore ones."""

    client: Any
    bucket: str
    endpoint: str

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> S3Store:
        config = Config(
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
        )
        client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
            config=config,
        )
        return cls(client=client, bucket=settings.bucket, endpoint=settings.endpoint_url or "AWS S3")

    def translate(self, exc: Exception, what: str) -> RegistryError:
        """A registry error for a failed call, saying which bucket and endpoint."""
        where = f"s3://{self.bucket} at {self.endpoint}"
        if isinstance(exc, ClientError):
            code = error_code(exc)
            if code in _AUTH_CODES or http_status(exc) == 403:
                return RegistryUnavailableError(f"{what}: {where} refused the credentials ({code})")
            if code == "NoSuchBucket":
                return BucketMissingError(f"{what}: bucket {self.bucket} does not exist at {self.endpoint}")
            return RegistryError(f"{what}: {where} answered {code or http_status(exc)}: {exc}")
        if isinstance(exc, EndpointConnectionError | BotoCoreError):
            return RegistryUnavailableError(f"{what}: {where} unreachable after retries ({exc})")
        return RegistryError(f"{what}: {exc}")

    def ensure_bucket(self, create: bool) -> None:
        """Check the bucket exists; create it only when asked (a typo must not silently make a new bucket)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if not is_not_found(exc):
                raise self.translate(exc, "head bucket") from exc
        except BotoCoreError as exc:
            raise self.translate(exc, "head bucket") from exc
        if not create:
            raise BucketMissingError(
                f"bucket {self.bucket} does not exist at {self.endpoint} (pass --create-bucket to create it)"
            )
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self.translate(exc, "create bucket") from exc

    def put_new(self, key: str, body: bytes) -> bool:
        """Create ``key`` only if absent (``If-None-Match: *``); False when it already exists."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise self.translate(exc, f"put {key}") from exc
        except BotoCoreError as exc:
            raise self.translate(exc, f"put {key}") from exc
        return True

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise self.translate(exc, f"get {key}") from exc
        except BotoCoreError as exc:
            raise self.translate(exc, f"get {key}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise self.translate(exc, f"head {key}") from exc
        except BotoCoreError as exc:
            raise self.translate(exc, f"head {key}") from exc
        return True

    def list_keys(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """(key, last_modified) of every object under ``prefix``."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"], obj["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise self.translate(exc, f"list {prefix}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self.translate(exc, f"delete {key}") from exc
