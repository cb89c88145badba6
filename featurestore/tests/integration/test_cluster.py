"""A local 3-master Redis Cluster: load → verify → activate → read, updates, and collection of a retired version.

Proves the layout: users spread over all three masters, one restaurant copy per master (each copy's MGET in one
slot, beside its pointer copy), every master holding at least a quarter of the keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import FeatureKeys, parse_copies, pointer_copy_key, unpack_restaurants
from forkcast_devservers.servers import RedisCluster as Cluster
from forkcast_features.client import connect
from forkcast_features.copies import copy_slot
from forkcast_features.cutover import activate, gc
from forkcast_features.loader import load_version
from forkcast_features.reader import read_request
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import read_source
from forkcast_features.status import describe_status
from forkcast_features.updates import update_restaurant
from forkcast_features.verify import verify_version
from forkcast_features.versions import read_meta

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

    # one copy per master, each copy's slot on a different master, and every master >= 25 % of the keys
    meta = read_meta(client, "fc", version)
    assert meta is not None
    copies = parse_copies(meta.restaurant_copies)
    owners = {client.nodes_manager.get_node_from_slot(copy_slot("fc", c)).port for c in copies}
    assert len(copies) == 3 and owners == set(cluster), (copies, owners)
    per_node = [redis.Redis(port=p).dbsize() for p in cluster]
    assert all(n >= 0.25 * sum(per_node) for n in per_node), per_node
    for c in copies:
        assert client.get(pointer_copy_key("fc", c)) == version.encode()
    assert f"restaurant copies {','.join(copies)}" in describe_status(client, "fc")
    got = read_request(client, "fc", 12, [0, 1, 2, 999_999])
    assert got.version == version and got.user is not None
    assert got.restaurants[3] is None
    rests = unpack_restaurants([v for v in got.restaurants if v is not None])
    assert abs(rests.latitude[0] - src.restaurants.latitude[list(src.restaurants.ids).index(0)]) < 1e-7

    keys = FeatureKeys("fc", version)
    update_restaurant(client, "fc", 2, 13.9, 100.6, [0.5] * 10)
    for c in copies:  # every copy updated, every copy's revision bumped
        k = keys.with_copy(c)
        assert int(client.get(k.restaurant_revision)) == 1, c  # type: ignore[arg-type]
        assert unpack_restaurants([client.get(k.restaurant(2))]).latitude[0] == 13.9, c  # type: ignore[list-item]
    assert unpack_restaurants([read_request(client, "fc", 12, [2]).restaurants[0] or b""]).latitude[0] == 13.9

    other = read_source(tiny_drifted)
    newer = load_version(client, other, prefix="fc", progress=False).version
    verify_version(client, other, prefix="fc", version=newer, sample=100)
    activate(client, "fc", newer)
    collected = gc(client, "fc", grace_seconds=0)
    assert [c.version for c in collected] == [version]
    assert collected[0].keys == len(src.users.ids) + 3 * (len(src.restaurants.ids) + 1)
    assert list(client.scan_iter(match=f"fc:{version}:*")) == []
    assert read_request(client, "fc", 12, [2]).version == newer
    assert {client.get(pointer_copy_key("fc", c)) for c in copies} == {newer.encode()}
