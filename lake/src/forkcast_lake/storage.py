"""How delta-rs reaches the lake's S3: the storage options and the table URIs, decided once for every writer.

Concurrent writers are safe because every commit is a put-if-absent of ``_delta_log/<version>.json`` (the Delta
protocol's "mutual exclusion" requirement: two clients must never both create one log file; delta-io/delta
PROTOCOL.md): S3 (since
2024-08), SeaweedFS and MinIO honour ``If-None-Match: *``, so of two writers racing for one version exactly one
wins and the other gets a commit conflict, re-reads the log and retries at the next version. delta-rs selects this
with ``aws_conditional_put=etag`` (object_store's ``S3ConditionalPut::ETagMatch``; delta-rs made it the S3 default
in delta-io/delta-rs#3091, we set it explicitly so that a change of default cannot silently drop it). Older
delta-rs offered ``AWS_S3_ALLOW_UNSAFE_RENAME``, with which the later of two racing writers overwrites the earlier
commit; :func:`storage_options` refuses to run when the environment sets it. (deltalake 1.6 itself no longer
commits without conditional puts: with ``aws_conditional_put=disabled`` a write fails with "PutMode::Create when
conditional put is disabled not yet implemented" — measured 2026-12-05 on weed mini.)
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from forkcast_lake.settings import get_settings
from forkcast_registry.settings import RegistrySettings

UNSAFE_RENAME = "AWS_S3_ALLOW_UNSAFE_RENAME"


class UnsafeStorageError(RuntimeError):
    """The environment asks delta-rs for a commit mode that can lose a concurrent writer's commit."""


def is_remote(uri: str | Path) -> bool:
    """Whether ``uri`` names an object store (``s3://…``) rather than a local path."""
    return isinstance(uri, str) and urlsplit(uri).scheme == "s3"


def storage_options(settings: RegistrySettings | None = None) -> dict[str, str]:
    """The delta-rs/polars ``storage_options`` for the project's S3 (keys as object_store spells them).

    Built from the registry's settings (the same environment variables), so a pod configured for the registry
    reaches the lake too. ``aws_allow_http`` is set only for an ``http://`` endpoint (SeaweedFS in tests and the
    local platform).
    """
    if os.environ.get(UNSAFE_RENAME, "").strip().lower() in {"1", "true", "yes"}:
        raise UnsafeStorageError(
            f"{UNSAFE_RENAME} is set: delta-rs would let two concurrent writers overwrite each other's commit; "
            "unset it (the lake commits with S3 conditional puts)"
        )
    s = settings if settings is not None else get_settings()
    options = {"aws_region": s.region, "aws_conditional_put": "etag"}
    if s.endpoint_url:
        options["aws_endpoint_url"] = s.endpoint_url
        if s.endpoint_url.startswith("http://"):
            options["aws_allow_http"] = "true"
    if s.access_key_id:
        options["aws_access_key_id"] = s.access_key_id
    if s.secret_access_key:
        options["aws_secret_access_key"] = s.secret_access_key
    return options


def options_for(uri: str | Path, settings: RegistrySettings | None = None) -> dict[str, str] | None:
    """Storage options for ``uri``: the S3 ones for ``s3://…``, none for a local path."""
    return storage_options(settings) if is_remote(uri) else None


def table_uri(base: str | Path, name: str) -> str:
    """The URI of table ``name`` under ``base`` (``s3://bucket/prefix`` or a local directory).

    ``name`` may be a relative path (``served/predictions``) but never absolute nor climbing out of ``base``:
    every table of a dataset or of the served log lives beneath its prefix.
    """
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in {"", ".", ".."} for part in parts):
        raise ValueError(f"table name {name!r} must be a relative path below the lake prefix")
    if is_remote(base):
        return f"{str(base).rstrip('/')}/{name}"
    return str(Path(base) / name)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parts.netloc, parts.path.strip("/")
