"""The admin update's optimistic transaction on a real redis-server: a cutover between reading the live pointer and
EXEC must not leave the update in the retired version — it is retried on the new one, or refused with nothing
written. The cutover is made for real (a second client flips the pointer from inside ``key_of``, which runs after
the WATCH and before EXEC)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from forkcast_contract.feature_store import FeatureKeys, meta_key, pointer_key, user_value
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.feature_updates import UpdateConflictError, apply_update

PREFIX = "race"
OLD, NEW = [0.0] * 30, [1.0] * 30


def _setup(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port)
    client.delete(*(client.keys(f"{PREFIX}:*") or [f"{PREFIX}:none"]))
    for version in ("v1", "v2"):
        client.set(FeatureKeys(PREFIX, version).user(1), user_value(OLD))
    client.set(pointer_key(PREFIX), "v1")


def _flipping(redis_server: RedisServer, times: int) -> Callable[[FeatureKeys], str]:
    client, calls = redis.Redis(port=redis_server.port), [0]

    def key_of(keys: FeatureKeys) -> str:
        calls[0] += 1
        if calls[0] <= times:  # a cutover lands between our pointer read and our EXEC
            client.set(pointer_key(PREFIX), "v2" if keys.version == "v1" else "v1")
        return keys.user(1)

    return key_of


async def _apply(redis_server: RedisServer, key_of: Callable[[FeatureKeys], str]) -> str:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        return await apply_update(client, PREFIX, key_of, user_value(NEW), bump_restaurant_revision=False)
    finally:
        await client.aclose()


def test_a_cutover_during_the_update_retries_it_on_the_new_live_version(redis_server: RedisServer) -> None:
    _setup(redis_server)
    assert asyncio.run(_apply(redis_server, _flipping(redis_server, times=1))) == "v2"
    client = redis.Redis(port=redis_server.port)
    assert client.get(FeatureKeys(PREFIX, "v2").user(1)) == user_value(NEW)
    assert client.get(FeatureKeys(PREFIX, "v1").user(1)) == user_value(
        OLD
    )  # the retired version is untouched
    assert client.hget(meta_key(PREFIX, "v2"), "updates") == b"1"
    assert client.hget(meta_key(PREFIX, "v1"), "updates") is None


def test_a_pointer_that_keeps_moving_is_refused_with_nothing_written(redis_server: RedisServer) -> None:
    _setup(redis_server)
    with pytest.raises(UpdateConflictError):
        asyncio.run(_apply(redis_server, _flipping(redis_server, times=99)))
    client = redis.Redis(port=redis_server.port)
    for version in ("v1", "v2"):
        assert client.get(FeatureKeys(PREFIX, version).user(1)) == user_value(OLD)
        assert client.hget(meta_key(PREFIX, version), "updates") is None
