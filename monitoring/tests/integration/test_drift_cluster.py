"""The drift job's feature reads on a real 3-master Redis Cluster (``FORKCAST_REDIS_CLUSTER``, issue 19): users spread
over every slot and restaurants held only as per-master copies (the loader's Cluster layout), and the job still
finds every sampled entity's features. Before, it read restaurants from the single-table keys, which a Cluster load
never writes, and sent one MGET across slots for users.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import FeatureKeys, meta_key, pack_restaurants, pack_users
from forkcast_contract.features import MODEL_INPUTS, RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT
from forkcast_devservers.servers import RedisCluster as Cluster
from forkcast_monitoring.drift_job import Sample, features_client, served_features

PREFIX, VERSION, COPIES = "drc", "dddd0001", ("c0", "c1", "c2")
USERS, RESTAURANTS = list(range(40)), list(range(30))


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[RedisCluster]:
    client = features_client(redis_cluster.url, cluster=True)
    assert isinstance(client, RedisCluster)
    yield client
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        r = redis.Redis(host=node.host, port=node.port)
        for key in r.scan_iter(match=f"{PREFIX}:*"):
            r.delete(key)
    client.close()


def test_served_features_are_read_from_a_cluster_load(cluster: RedisCluster) -> None:
    rng = np.random.default_rng(3)
    users = rng.normal(size=(len(USERS), USER_FEATURE_COUNT)).astype(np.float32)
    rests = rng.normal(size=(len(RESTAURANTS), RESTAURANT_FEATURE_COUNT)).astype(np.float32)
    keys = FeatureKeys(PREFIX, VERSION)
    for i, row in zip(USERS, users, strict=True):
        cluster.set(keys.user(i), pack_users(row[None, :]))
    for copy in COPIES:  # one copy per restaurant tag, as `forkcast-features load` writes on a Cluster
        k = keys.with_copy(copy)
        for i, row in zip(RESTAURANTS, rests, strict=True):
            cluster.set(k.restaurant(i), pack_restaurants(np.array([13.7]), np.array([100.5]), row[None, :]))
    cluster.hset(meta_key(PREFIX, VERSION), "restaurant_copies", ",".join(COPIES))
    assert not cluster.exists(keys.restaurant(0))  # no single-table key: only the copies exist
    owner = cluster.get_node_from_key  # untyped in redis-py
    masters = {owner(keys.user(i)).name for i in USERS}  # type: ignore[no-untyped-call]
    assert len(masters) == 3  # the sampled users really span the masters (and slots)

    sample = Sample(events=1, users={VERSION: set(USERS)}, restaurants={VERSION: set(RESTAURANTS)}, scores=[])
    columns = served_features(cluster, PREFIX, sample)

    assert sorted(columns) == sorted(MODEL_INPUTS)
    for j, name in enumerate(MODEL_INPUTS):
        expected = users[:, j] if j < USER_FEATURE_COUNT else rests[:, j - USER_FEATURE_COUNT]
        np.testing.assert_array_equal(columns[name], expected, err_msg=name)
