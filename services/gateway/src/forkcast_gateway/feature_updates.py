"""Live feature updates from the admin endpoint: one user's or one restaurant's values in the LIVE version.

The value and its checks come from ``forkcast_contract.feature_store`` (the same ones the feature-store CLI uses,
forkcast_features/updates.py); only the Redis calls are here, because the contract may not depend on redis and the
gateway may not depend on forkcast-features (it pulls polars: tests/workspace).

One optimistic transaction per update: WATCH the live pointer, read it, WATCH the entity's key, check the entity
exists, then MULTI: SET the value, (restaurant) INCR the version's restaurant revision — the inference service
reloads its in-memory coordinates when that changes — and HINCRBY the version's ``updates`` count. A cutover or a
delete between the read and EXEC aborts the EXEC (WatchError) and the update is retried on the new live version,
so an acknowledged update is never left in a retired version.

On a Redis Cluster (``FORKCAST_REDIS_CLUSTER``; the MULTI above spans slots, which a Cluster refuses) the update is
written the way the feature-store CLI writes it (forkcast_features/updates.py), with the keys and script from
``forkcast_contract.feature_store``: a user by ``SET XX``; a restaurant in EVERY copy of the version
(``restaurant_copy_keys``), each copy's value and revision in one script on that copy's slot, so a reader of any
copy sees the new value with a new revision in one MGET. Then the pointer is read again: a cutover in between means
the update went into a retired version, and it is applied again on the new live version (up to ``ATTEMPTS``), so
an acknowledged update was written while its version was live. The version's ``updates`` count is bumped last.

After the write succeeded, :class:`UpdateLog` appends the update to FEATURE_UPDATES_STREAM in the events Redis (the
values as stored, forkcast_contract.feature_update_events), which the lake compacts into ``served/feature_updates``
so that a training row gets the features a prediction was served with. Logging after the write (never before) means
a logged update always happened; if the XADD fails the route answers 503 and the client's retry writes the same
value again and logs it (an update logged twice with one value is harmless to the lake's point-in-time join).
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import WatchError

from forkcast_contract.feature_store import (
    SET_AND_BUMP_SCRIPT,
    FeatureKeys,
    meta_key,
    pointer_key,
    restaurant_copy_keys,
)
from forkcast_contract.feature_update_events import Entity, update_event_fields

ATTEMPTS = 3


class NoLiveVersionError(Exception):
    """No feature version is live: there is nothing to update."""


class UnknownEntityError(Exception):
    """The id does not exist in the live version (an update never creates an entity: counts would drift)."""


class UpdateConflictError(Exception):
    """The live pointer kept changing under the update; nothing was written."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def apply_update(
    client: aioredis.Redis | RedisCluster,
    prefix: str,
    key_of: Callable[[FeatureKeys], str],
    value: bytes,
    *,
    bump_restaurant_revision: bool,
) -> str:
    """Write ``value`` at ``key_of(live keys)`` (of every restaurant copy on a Cluster); returns the live version.

    ``bump_restaurant_revision`` marks a restaurant update: its copy's revision is bumped with it.
    """
    if isinstance(client, RedisCluster):
        return await _apply_on_cluster(client, prefix, key_of, value, restaurant=bump_restaurant_revision)
    pointer = pointer_key(prefix)
    for _ in range(ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(pointer)
                raw = await pipe.get(pointer)
                if raw is None:
                    raise NoLiveVersionError("no live feature version to update")
                keys = FeatureKeys(prefix, raw.decode() if isinstance(raw, bytes) else str(raw))
                key = key_of(keys)
                await pipe.watch(key)
                if not await pipe.exists(key):
                    raise UnknownEntityError(f"not in the live feature version {keys.version}")
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, value)
                if bump_restaurant_revision:
                    pipe.incr(keys.restaurant_revision)
                pipe.hincrby(meta_key(prefix, keys.version), "updates", 1)
                await pipe.execute()
                return keys.version
            except WatchError:
                continue
    raise UpdateConflictError(f"the live feature version changed {ATTEMPTS} times during the update")


async def _apply_on_cluster(
    client: RedisCluster, prefix: str, key_of: Callable[[FeatureKeys], str], value: bytes, *, restaurant: bool
) -> str:
    """The Cluster form of :func:`apply_update` (see the module docstring)."""
    pointer = pointer_key(prefix)
    set_and_bump = client.register_script(SET_AND_BUMP_SCRIPT)  # EVALSHA; SCRIPT LOAD on every primary once
    for _ in range(ATTEMPTS):
        raw = await client.get(pointer)
        if raw is None:
            raise NoLiveVersionError("no live feature version to update")
        keys = FeatureKeys(prefix, _text(raw))
        if restaurant:
            # HMGET, not HGET: the gateway's ACL user has HMGET already (the rate-limit script's read).
            (copies,) = await client.hmget(meta_key(prefix, keys.version), ["restaurant_copies"])
            for n, k in enumerate(restaurant_copy_keys(keys, _text(copies or b""))):
                if await set_and_bump(keys=[key_of(k), k.restaurant_revision], args=[value]) is None:
                    # Only the first copy can refuse: every copy holds the same ids (verified before activation).
                    where = f" (copy {k.copy}, after {n} updated copies)" if n else ""
                    raise UnknownEntityError(f"not in the live feature version {keys.version}{where}")
        elif not await client.set(key_of(keys), value, xx=True):
            raise UnknownEntityError(f"not in the live feature version {keys.version}")
        if await client.get(pointer) != raw:
            continue  # a cutover landed between the pointer read and the write: apply it to the new live version
        await client.hincrby(meta_key(prefix, keys.version), "updates", 1)
        return keys.version
    raise UpdateConflictError(f"the live feature version changed {ATTEMPTS} times during the update")


class UpdateLog:
    """Appends applied updates to the feature-updates stream (capped with ``MAXLEN ~`` like the other streams)."""

    def __init__(self, client: aioredis.Redis, stream: str, maxlen: int) -> None:
        self.client, self.stream, self.maxlen = client, stream, maxlen

    async def record(
        self, entity: Entity, entity_id: int, version: str, value: bytes, actor: str, time: float
    ) -> None:
        fields = update_event_fields(entity, entity_id, version, value, time, actor)
        await self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
