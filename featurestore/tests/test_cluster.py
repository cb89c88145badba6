"""A local 3-master Redis Cluster: load → verify → activate → read, updates, and collection of a retired version.

Proves the hash tags: restaurant MGETs stay in one slot, users spread over all three masters.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import FeatureKeys, unpack_restaurants
from forkcast_features.client import connect
from forkcast_features.cutover import activate, gc
from forkcast_features.loader import load_version
from forkcast_features.reader import read_request
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import read_source
from forkcast_features.updates import update_restaurant
from forkcast_features.verify import verify_version

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="redis-server / redis-cli not installed (Debian packages redis-server, redis-tools)",
    ),
]


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 10000):  # the cluster bus listens on port + 10000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < 3:
        p = rng.randrange(20000, 40000)
        if p not in ports and _port_pair_free(p):
            ports.append(p)
    procs = []
    try:
        for p in ports:
            d = tmp_path_factory.mktemp(f"cluster{p}")
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(p),
                        "--dir",
                        str(d),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p in ports:
            _wait(lambda p=p: redis.Redis(port=p).ping())
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for p in ports:
            _wait(lambda p=p: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok")
        yield ports
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)


def _wait(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("cluster did not come up")
        time.sleep(0.1)


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
