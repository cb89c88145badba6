"""Metadata records and the live pointer: the small control plane around the versioned data keys."""

from __future__ import annotations

from datetime import UTC, datetime

from forkcast_contract.feature_store import VersionMeta, meta_key, pointer_key, versions_key
from forkcast_features.client import Client


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def live_version(client: Client, prefix: str) -> str | None:
    raw = client.get(pointer_key(prefix))
    return raw.decode() if isinstance(raw, bytes) else None


def read_meta(client: Client, prefix: str, version: str) -> VersionMeta | None:
    raw = client.hgetall(meta_key(prefix, version))
    return VersionMeta.from_redis(raw) if raw else None  # type: ignore[arg-type]


def write_meta(client: Client, prefix: str, meta: VersionMeta) -> None:
    client.hset(meta_key(prefix, meta.version), mapping=meta.to_redis())  # type: ignore[arg-type]
    client.sadd(versions_key(prefix), meta.version)


def set_fields(client: Client, prefix: str, version: str, **values: object) -> None:
    client.hset(meta_key(prefix, version), mapping={k: str(v) for k, v in values.items()})


def list_versions(client: Client, prefix: str) -> list[VersionMeta]:
    """All known versions, oldest first."""
    names = sorted(m.decode() for m in client.smembers(versions_key(prefix)))  # type: ignore[union-attr]
    metas = [m for m in (read_meta(client, prefix, n) for n in names) if m is not None]
    return sorted(metas, key=lambda m: m.created_at)


def forget(client: Client, prefix: str, version: str) -> None:
    client.delete(meta_key(prefix, version))
    client.srem(versions_key(prefix), version)
