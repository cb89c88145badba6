"""The admin feature updates on a real 3-master Redis Cluster (``FORKCAST_REDIS_CLUSTER``, issue 19): a restaurant
update reaches every restaurant copy of the live version and bumps each copy's revision, a user update its key, an
unknown id writes nothing, and a cutover between the pointer read and the write re-applies the update to the new
live version. Before the gateway knew Clusters, its single-node WATCH/MULTI got MOVED replies and answered 503.

The version is written by hand with the contract's keys (the gateway may not depend on the loader), one copy per
master as ``forkcast-features load`` lays it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import (
    FeatureKeys,
    meta_key,
    pointer_copy_key,
    pointer_key,
    restaurant_value,
    user_value,
)
from forkcast_contract.streams import FEATURE_UPDATES_STREAM
from forkcast_devservers.servers import RedisCluster as Cluster
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.edge import Edge
from forkcast_gateway.feature_updates import UpdateConflictError, apply_update
from forkcast_gateway.testing import ADMIN_KEY, serve

PREFIX = "gwc"
VERSION, NEXT = "aaaa0001", "aaaa0002"
USER, RESTAURANT = 3, 4
OLD_R, NEW_R = restaurant_value(13.7, 100.5, [0.0] * 10), restaurant_value(13.8, 100.6, [2.0] * 10)


def _copies(client: RedisCluster) -> list[str]:
    """One copy name per master (the slot of ``{gwc:c<j>}`` owned by that master), as the loader picks them."""
    picked: dict[str, str] = {}
    masters = len(client.get_primaries())  # type: ignore[no-untyped-call]
    for j in range(1000):
        node = client.get_node_from_key(f"{{{PREFIX}:c{j}}}").name  # type: ignore[no-untyped-call]
        picked.setdefault(node, f"c{j}")
        if len(picked) == masters:
            return sorted(picked.values())
    raise AssertionError("no copy name for some master")


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[tuple[RedisCluster, list[str]]]:
    """Two versions (VERSION live) with a user and a restaurant in every copy, on the session's Cluster."""
    client = RedisCluster.from_url(redis_cluster.url)
    copies = _copies(client)
    for version in (VERSION, NEXT):
        keys = FeatureKeys(PREFIX, version)
        client.set(keys.user(USER), user_value([0.0] * 30))
        client.hset(meta_key(PREFIX, version), mapping={"restaurant_copies": ",".join(copies), "updates": 0})
        for copy in copies:
            k = keys.with_copy(copy)
            client.set(k.restaurant(RESTAURANT), OLD_R)
            client.set(k.restaurant_revision, 0)
    client.set(pointer_key(PREFIX), VERSION)
    for copy in copies:
        client.set(pointer_copy_key(PREFIX, copy), VERSION)
    yield client, copies
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        r = redis.Redis(host=node.host, port=node.port)
        for key in r.scan_iter(match=f"{PREFIX}:*"):
            r.delete(key)
    client.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., Edge], redis_cluster: Cluster) -> Iterator[str]:
    app = make_gateway(features_redis_url=redis_cluster.url, redis_cluster=True, feature_prefix=PREFIX)
    with serve(app) as url:
        yield url


def _put(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(
        f"{url}/admin/features/{path}", json=body, headers={"x-api-key": ADMIN_KEY}, timeout=5
    )


def test_a_restaurant_update_reaches_every_copy_with_its_revision(
    gateway: str, cluster: tuple[RedisCluster, list[str]], redis_server: RedisServer
) -> None:
    client, copies = cluster
    assert len(copies) == 3
    events = redis.Redis(port=redis_server.port)
    logged_before = events.xlen(FEATURE_UPDATES_STREAM)
    body = {"latitude": 13.8, "longitude": 100.6, "features": [2.0] * 10}
    r = _put(gateway, f"restaurants/{RESTAURANT}", body)
    assert r.status_code == 200, r.text
    assert r.json() == {"entity": "restaurant", "id": RESTAURANT, "feature_version": VERSION}
    keys = FeatureKeys(PREFIX, VERSION)
    for copy in copies:  # every copy, each with its own revision bumped: a reader of any copy reloads
        assert client.get(keys.with_copy(copy).restaurant(RESTAURANT)) == NEW_R, copy
        assert client.get(keys.with_copy(copy).restaurant_revision) == b"1", copy
    assert client.hget(meta_key(PREFIX, VERSION), "updates") == b"1"
    assert client.get(FeatureKeys(PREFIX, NEXT).with_copy(copies[0]).restaurant(RESTAURANT)) == OLD_R
    assert events.xlen(FEATURE_UPDATES_STREAM) == logged_before + 1


def test_a_user_update_and_unknown_ids_on_a_cluster(
    gateway: str, cluster: tuple[RedisCluster, list[str]]
) -> None:
    client, copies = cluster
    keys = FeatureKeys(PREFIX, VERSION)
    r = _put(gateway, f"users/u{USER:05d}", {"features": [1.5] * 30})
    assert r.status_code == 200, r.text
    assert client.get(keys.user(USER)) == user_value([1.5] * 30)
    unknown_user = _put(gateway, "users/u99999", {"features": [1.5] * 30})
    assert unknown_user.status_code == 404, unknown_user.text
    assert "user 99999 not in the live feature version aaaa0001" in unknown_user.text
    assert not client.exists(keys.user(99999))  # SET XX: an update never creates an entity
    body = {"latitude": 13.8, "longitude": 100.6, "features": [2.0] * 10}
    unknown_restaurant = _put(gateway, "restaurants/77", body)
    assert unknown_restaurant.status_code == 404, unknown_restaurant.text
    assert "restaurant 77 not in the live feature version aaaa0001" in unknown_restaurant.text
    for copy in copies:  # nothing written, no revision bumped
        assert not client.exists(keys.with_copy(copy).restaurant(77))
        assert client.get(keys.with_copy(copy).restaurant_revision) == b"0"
    assert client.hget(meta_key(PREFIX, VERSION), "updates") == b"1"  # the user update only


def _flipping(client: RedisCluster, times: int) -> Callable[[FeatureKeys], str]:
    """A ``key_of`` that moves the live pointer (a real cutover) the first ``times`` times it is asked for a key."""
    calls = [0]

    def key_of(keys: FeatureKeys) -> str:
        calls[0] += 1
        if calls[0] <= times:
            client.set(pointer_key(PREFIX), NEXT if keys.version == VERSION else VERSION)
        return keys.restaurant(RESTAURANT)

    return key_of


async def _apply(url: str, key_of: Callable[[FeatureKeys], str]) -> str:
    client = AsyncCluster.from_url(url)
    try:
        return await apply_update(client, PREFIX, key_of, NEW_R, bump_restaurant_revision=True)
    finally:
        await client.aclose()


def test_a_cutover_during_a_cluster_update_reapplies_it_on_the_new_version(
    redis_cluster: Cluster, cluster: tuple[RedisCluster, list[str]]
) -> None:
    client, copies = cluster
    assert asyncio.run(_apply(redis_cluster.url, _flipping(client, times=1))) == NEXT
    new = FeatureKeys(PREFIX, NEXT)
    for copy in copies:
        assert client.get(new.with_copy(copy).restaurant(RESTAURANT)) == NEW_R, copy
        assert client.get(new.with_copy(copy).restaurant_revision) == b"1", copy
    assert client.hget(meta_key(PREFIX, NEXT), "updates") == b"1"
    assert client.hget(meta_key(PREFIX, VERSION), "updates") == b"0"  # not counted where it was not live


def test_a_pointer_that_keeps_moving_refuses_the_cluster_update(
    redis_cluster: Cluster, cluster: tuple[RedisCluster, list[str]]
) -> None:
    client, _ = cluster
    with pytest.raises(UpdateConflictError, match="changed 3 times"):
        asyncio.run(_apply(redis_cluster.url, _flipping(client, times=99)))
    for version in (VERSION, NEXT):
        assert client.hget(meta_key(PREFIX, version), "updates") == b"0"
