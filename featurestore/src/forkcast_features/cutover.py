"""Warm cutover: switch the live pointer atomically, roll back, and collect retired versions.

Readers read the pointer and then only keys of that version, so switching one string key is the whole cutover:
no request mixes versions. On a Redis Cluster, where MULTI cannot span slots, the canonical pointer switches first
(compare-and-set), then every pointer copy (one per restaurant copy, in that copy's slot); a Cluster reader checks
the pointer copy it read in the same MGET as the version's restaurants, so each request still sees one version
(copies may disagree for the milliseconds between their SETs: a request on one master may see the new version
while one on another still sees the old; rerunning `activate` re-syncs copies a crash left behind).
A retired version stays readable for the grace period (requests that read the old
pointer just before the switch finish on it), then ``gc`` deletes it in SCAN/UNLINK batches that never block
Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from forkcast_contract.feature_store import (
    LAYOUT_VERSION,
    STATE_VERIFIED,
    FeatureKeys,
    VersionMeta,
    copies_key,
    pointer_copy_key,
    pointer_key,
)
from forkcast_contract.features import feature_schema_hash
from forkcast_features.client import Client, scan_keys, unlink
from forkcast_features.copies import sync_pointer_copies
from forkcast_features.versions import forget, list_versions, live_version, now, read_meta, set_fields

# Compare-and-set on the pointer (one key, so it also runs on a Cluster): two operators activating at once
# cannot both win, and the loser learns what is live now.
_SWITCH = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {0, cur or ''} end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
"""


class CutoverError(RuntimeError):
    """An activation, rollback or collection was refused; the live pointer is unchanged."""


def _switch(client: Client, prefix: str, expected: str | None, target: str) -> None:
    ok, current = cast("list[object]", client.eval(_SWITCH, 1, pointer_key(prefix), expected or "", target))
    if not ok:
        shown = current.decode() if isinstance(current, bytes) else current
        raise CutoverError(f"live version changed concurrently (now {shown or 'none'}); nothing switched")


def activate(client: Client, prefix: str, version: str) -> str | None:
    """Make ``version`` live; returns the version it replaced. Only a verified, compatible version may go live."""
    meta = read_meta(client, prefix, version)
    if meta is None:
        raise CutoverError(f"version {version} does not exist")
    if meta.state != STATE_VERIFIED:
        raise CutoverError(f"version {version} is {meta.state}, not verified: it cannot be activated")
    if meta.layout_version != LAYOUT_VERSION or meta.feature_schema_hash != feature_schema_hash():
        raise CutoverError(
            f"version {version} has layout {meta.layout_version} / schema {meta.feature_schema_hash}; this code "
            f"reads layout {LAYOUT_VERSION} / schema {feature_schema_hash()}"
        )
    current = live_version(client, prefix)
    if current == version:
        _sync_copies(client, prefix, version)
        return current
    stamp = now()
    set_fields(client, prefix, version, activated_at=stamp, previous=current or "", deactivated_at="")
    _switch(client, prefix, current, version)
    _sync_copies(client, prefix, version)
    if current:
        set_fields(client, prefix, current, deactivated_at=stamp)
    return current


def _sync_copies(client: Client, prefix: str, version: str) -> None:
    # Every copy name ever loaded, not only this version's: a reader still on an older version's copy must see
    # the switch too.
    names = sorted(m.decode() for m in cast("set[bytes]", client.smembers(copies_key(prefix))))
    sync_pointer_copies(client, prefix, version, names)


def live_versions(client: Client, prefix: str) -> set[str]:
    """Every version a reader may take as live: the canonical pointer's and each pointer copy's."""
    names = [m.decode() for m in cast("set[bytes]", client.smembers(copies_key(prefix)))]
    keys = [pointer_key(prefix), *(pointer_copy_key(prefix, c) for c in names)]
    return {v.decode() for v in (client.get(k) for k in keys) if isinstance(v, bytes)}


def rollback(client: Client, prefix: str) -> str:
    """Switch back to the version that was live before the current one (if it has not been collected)."""
    current = live_version(client, prefix)
    if current is None:
        raise CutoverError("no live version to roll back from")
    meta = read_meta(client, prefix, current)
    if meta is None or not meta.previous:
        raise CutoverError(f"live version {current} records no previous version")
    previous = read_meta(client, prefix, meta.previous)
    if previous is None or previous.state != STATE_VERIFIED:
        raise CutoverError(f"previous version {meta.previous} is gone or incomplete; cannot roll back")
    stamp = now()
    _switch(client, prefix, current, previous.version)
    _sync_copies(client, prefix, previous.version)
    set_fields(client, prefix, previous.version, activated_at=stamp, deactivated_at="")
    set_fields(client, prefix, current, deactivated_at=stamp)
    return previous.version


def drop_version(client: Client, prefix: str, version: str, *, batch: int = 1000) -> int:
    """Delete every key of a non-live version (SCAN + UNLINK in batches), then its metadata."""
    if version in live_versions(client, prefix):
        raise CutoverError(
            f"version {version} is live (or a pointer copy still names it); activate another version first"
        )
    deleted = 0
    pending: list[bytes] = []
    for key in scan_keys(client, FeatureKeys(prefix, version).pattern, count=batch):
        pending.append(key)
        if len(pending) >= batch:
            deleted += unlink(client, pending)
            pending = []
    deleted += unlink(client, pending)
    forget(client, prefix, version)
    return deleted


@dataclass(frozen=True)
class Collected:
    version: str
    keys: int


def _age_seconds(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def collectable(client: Client, prefix: str, grace_seconds: float) -> list[VersionMeta]:
    """Retired versions past their grace period (never the live one nor a version still loading)."""
    live = live_versions(client, prefix)
    return [
        m
        for m in list_versions(client, prefix)
        if m.version not in live and m.deactivated_at and _age_seconds(m.deactivated_at) >= grace_seconds
    ]


def gc(client: Client, prefix: str, grace_seconds: float) -> list[Collected]:
    """Delete retired versions whose grace period is over."""
    return [
        Collected(m.version, drop_version(client, prefix, m.version))
        for m in collectable(client, prefix, grace_seconds)
    ]
