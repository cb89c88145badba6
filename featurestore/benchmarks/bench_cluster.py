"""Hash-tag choice on a local 3-master Redis Cluster, measured by `bench_features.py cluster`.

A request fetches the user plus its in-range candidates (≈ 20-70 after the distance filter). Three restaurant
key layouts are compared: one tag per version (the layout in forkcast_contract.feature_store: one MGET on one
node), no tag (keys spread over all slots: redis-py splits the MGET by slot), and an H3 res-5 cell tag (a
request's neighbourhood falls in a few slots).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_fetch import Request
from redis.cluster import RedisCluster as ClusterClient

from forkcast_contract.feature_store import RESTAURANT_VALUE_BYTES, pack_restaurants, split_values
from forkcast_devservers.servers import RedisCluster
from forkcast_features.client import mset
from forkcast_features.geo import h3_cells, within_bbox
from forkcast_features.source import SourceData


def run(src: SourceData, reqs: list[Request]) -> None:
    r = src.restaurants
    order = np.argsort(r.ids)
    ids, lat, lng = r.ids[order], r.latitude[order], r.longitude[order]
    values = split_values(pack_restaurants(lat, lng, r.features[order]), RESTAURANT_VALUE_BYTES)
    cells = h3_cells(lat, lng, 5)
    layouts: dict[str, Callable[[int], str]] = {
        "one tag per version (chosen): one MGET, one node": lambda i: f"b:v:r:{{v:r}}{i}",
        "no tag: MGET split by slot over 3 nodes": lambda i: f"b:v:r:{i}",
        "H3 res-5 cell tag: MGET split over a few slots": lambda i: f"b:v:r:{{{cells[i]:x}}}{i}",
    }
    in_range = [
        q.candidates[within_bbox(q.lat, q.lng, lat[q.candidates], lng[q.candidates], q.max_dist)]
        for q in reqs
    ]
    users = [f"b:v:u:{q.user_id}" for q in reqs]
    with (
        tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp,
        RedisCluster(Path(tmp), masters=3) as cluster,
    ):
        client = ClusterClient.from_url(cluster.url)
        mset(client, users, [b"u" * 120] * len(users))
        for name, key in layouts.items():
            mset(client, [key(int(i)) for i in ids], values)
            one_slot = name.startswith("one tag")

            def fetch(k: int, key: Callable[[int], str] = key, one_slot: bool = one_slot) -> int:
                rkeys = [key(int(i)) for i in in_range[k]]
                client.get(users[k])
                got = client.mget(rkeys) if one_slot else client.mget_nonatomic(rkeys)
                return len(got)

            for k in range(min(50, len(reqs))):
                fetch(k)
            cpu0, t0 = cluster.cpu_seconds(), time.perf_counter()
            fetched = sum(fetch(k) for k in range(len(reqs)))
            wall, cpu = time.perf_counter() - t0, cluster.cpu_seconds() - cpu0
            assert fetched == sum(len(x) for x in in_range)
            print(f"  {name:<52} {len(reqs) / wall:6,.0f} req/s  Redis {cpu / len(reqs) * 1e6:6.1f} µs/req")
        client.close()
