"""A local 3-master Redis Cluster: load → verify → activate → read, updates, and collection of a retired version.

Proves the hash tags: restaurant MGETs stay in one slot, users spread over all three masters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import FeatureKeys, unpack_restaurants
from forkcast_devservers.servers import RedisCluster as Cluster
from forkcast_features.client import connect
from forkcast_features.cutover import activate, gc
from forkcast_features.loader import load_version
from forkcast_features.reader import read_request
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import read_source
from forkcast_features.updates import update_restaurant
from forkcast_features.verify import verify_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(redis_cluster: Cluster) -> list[int]:
    """The node ports of the session's 3-master cluster (forkcast_devservers plugin), emptied for this module."""
    ports = [port for _, port in redis_cluster.startup_nodes]
    for port in ports:
        redis.Redis(port=port).flushall()
    return ports


def test_load_activate_read_update_gc_on_a_three_master_cluster(
    cluster: list[int], tiny_data: Path, tiny_drifted: Path
) -> None:
    settings = FeatureStoreSettings(redis_url=f"redis://127.0.0.1:{cluster[0]}/0", redis_cluster=True)
    client = connect(settings)
    assert isinstance(client, RedisCluster)
    src = read_source(tiny_data)
    version = load_version(client, src, prefix="fc", batch_rows=3000, progress=False).version
    report = verify_version(client, src, prefix="fc", version=version, sample=500)
    assert report.ok and report.users_present == len(src.users.ids)
    activate(client, "fc", version)

    # users spread over all three masters; all restaurants of the version on one
    per_node = [redis.Redis(port=p).dbsize() for p in cluster]
    assert all(n > len(src.users.ids) / 5 for n in per_node), per_node
    got = read_request(client, "fc", 12, [0, 1, 2, 999_999])
    assert got.version == version and got.user is not None
    assert got.restaurants[3] is None
    rests = unpack_restaurants([v for v in got.restaurants if v is not None])
    assert abs(rests.latitude[0] - src.restaurants.latitude[list(src.restaurants.ids).index(0)]) < 1e-7

    keys = FeatureKeys("fc", version)
    update_restaurant(client, "fc", 2, 13.9, 100.6, [0.5] * 10)
    assert int(client.get(keys.restaurant_revision)) == 1  # type: ignore[arg-type]
    assert unpack_restaurants([read_request(client, "fc", 12, [2]).restaurants[0] or b""]).latitude[0] == 13.9

    other = read_source(tiny_drifted)
    newer = load_version(client, other, prefix="fc", progress=False).version
    verify_version(client, other, prefix="fc", version=newer, sample=100)
    activate(client, "fc", newer)
    collected = gc(client, "fc", grace_seconds=0)
    assert [c.version for c in collected] == [version]
    assert collected[0].keys == len(src.users.ids) + len(src.restaurants.ids) + 1
    assert list(client.scan_iter(match=f"fc:{version}:*")) == []
    assert read_request(client, "fc", 12, [2]).version == newer
