"""Standalone Redis vs a local 3-master Redis Cluster, and three Cluster layouts for the restaurants (issue 19).

Run by `bench_features.py cluster` (and so by `make bench-features`). Every layout serves the same requests (user
+ the in-range candidates picked from coordinates in memory, as the inference does) and is checked to return the
same bytes. Per layout: req/s of one sequential client, p50/p95 per fetch, the client's CPU µs per request, Redis CPU
µs per request (used_cpu_user + used_cpu_sys of every node from INFO, before/after, less the nodes' idle CPU rate
measured for 1 s just before, times the run's wall time), the key share per master and
the read share per master (MGET+GET calls, and Redis CPU, per master).

Layouts, all loaded by the real loader or written here with the same packed values:

* standalone: `forkcast_inference.features.FeatureReader` on one redis-server (the reference);
* Cluster, one copy of the restaurants per master (chosen; `forkcast_inference.cluster_features`): ONE round trip
  to the user's master (GET user + MGET [pointer copy, revision, restaurants]);
* Cluster, one tag per version (the previous layout): user GET on its master, MGET [revision, restaurants] on the
  version's one master, GET of the canonical pointer on its master: up to three nodes, the nodes' round trips sent
  together;
* Cluster, H3 cell as tag (res 5 and res 4): the user's GET, one MGET per cell of the in-range restaurants, the
  canonical pointer's GET; one pipeline per node, sent together.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from bench_fetch import Request
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    FeatureKeys,
    pack_restaurants,
    pointer_key,
    split_values,
)
from forkcast_devservers.servers import RedisCluster, RedisServer
from forkcast_features.client import connect, mset
from forkcast_features.cutover import activate
from forkcast_features.geo import h3_cells, within_bbox
from forkcast_features.loader import load_version
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import SourceData
from forkcast_features.verify import verify_version
from forkcast_inference.cluster_features import (
    ClusterFeatureReader,
    Command,
    NodePipes,
    Plan,
    round_trips,
)
from forkcast_inference.features import FeatureReader, VersionState
from forkcast_inference.features import connect as connect_standalone

PREFIX = "fc"
IDLE_S = 1.0
I64 = np.ndarray

# One fetch: request index -> (user value, values of the in-range candidates in order).
Fetch = Callable[[int], tuple[bytes | None, list[bytes | None]]]


@dataclass
class Figures:
    name: str
    req_s: float
    p50_ms: float
    p95_ms: float
    client_us: float
    redis_us: float
    key_share: list[float]
    call_share: list[float]
    cpu_share: list[float]


def _stats(ports: list[int]) -> list[tuple[int, float]]:
    """(GET+MGET calls, CPU seconds) of each node."""
    out = []
    for port in ports:
        c = redis.Redis(port=port)
        cmd, cpu = c.info("commandstats"), c.info("cpu")
        calls = sum(int(cmd.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in ("get", "mget"))
        out.append((calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])))
        c.close()
    return out


def _share(values: list[float]) -> list[float]:
    total = sum(values) or 1.0
    return [v / total for v in values]


def _measure(name: str, fetch: Fetch, n: int, ports: list[int], key_share: list[float]) -> Figures:
    for k in range(min(500, n)):  # warm-up: connections, caches
        fetch(k)
    # The servers' own background CPU (cron, cluster bus), measured idle and taken out of the per-request figure.
    idle0 = _stats(ports)
    time.sleep(IDLE_S)
    idle_rate = sum(a[1] - b[1] for a, b in zip(_stats(ports), idle0, strict=True)) / IDLE_S
    lat = np.empty(n)
    before, cpu0, t0 = _stats(ports), time.process_time(), time.perf_counter()
    for k in range(n):
        s = time.perf_counter()
        fetch(k)
        lat[k] = time.perf_counter() - s
    wall, client = time.perf_counter() - t0, time.process_time() - cpu0
    after = _stats(ports)
    calls = [float(a[0] - b[0]) for a, b in zip(after, before, strict=True)]
    cpu = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    return Figures(
        name,
        n / wall,
        float(np.percentile(lat, 50) * 1e3),
        float(np.percentile(lat, 95) * 1e3),
        client / n * 1e6,
        max(sum(cpu) - idle_rate * wall, 0.0) / n * 1e6,
        key_share,
        _share(calls),
        _share(cpu),
    )


def _pct(shares: list[float]) -> str:
    return " / ".join(f"{s:.0%}" for s in shares)


def _print(rows: list[Figures], base: Figures) -> None:
    print(
        f"  {'layout':<44} {'req/s':>7} {'ratio':>6} {'p50 ms':>7} {'p95 ms':>7} {'client µs':>9} "
        f"{'Redis µs':>8}  key share / read share (calls) / Redis CPU share per master"
    )
    for f in rows:
        shares = (
            "-"
            if len(f.key_share) == 1
            else f"{_pct(f.key_share)} | {_pct(f.call_share)} | {_pct(f.cpu_share)}"
        )
        print(
            f"  {f.name:<44} {f.req_s:7,.0f} {f.req_s / base.req_s:5.2f}× {f.p50_ms:7.3f} {f.p95_ms:7.3f} "
            f"{f.client_us:9.1f} {f.redis_us:8.1f}  {shares}"
        )


def _load(client: redis.Redis | ClusterClient, src: SourceData) -> str:
    version = load_version(client, src, prefix=PREFIX, progress=False).version
    verify_version(client, src, prefix=PREFIX, version=version, sample=1000)
    activate(client, PREFIX, version)
    return version


def _picked(in_range: list[I64]) -> Callable[[int], Callable[[VersionState], I64]]:
    return lambda k: lambda _state: in_range[k]


def run(src: SourceData, reqs: list[Request]) -> None:
    r = src.restaurants
    order = np.argsort(r.ids)
    ids, lat, lng = r.ids[order], r.latitude[order], r.longitude[order]
    values = split_values(pack_restaurants(lat, lng, r.features[order]), RESTAURANT_VALUE_BYTES)
    in_range = [
        np.unique(q.candidates[within_bbox(q.lat, q.lng, lat[q.candidates], lng[q.candidates], q.max_dist)])
        for q in reqs
    ]
    pick = _picked(in_range)
    n = len(reqs)
    print(f"  {n:,} requests, {np.mean([len(x) for x in in_range]):.0f} in-range candidates on average")
    results: dict[str, list[tuple[bytes | None, list[bytes | None]]]] = {}
    rows: list[Figures] = []

    def check(name: str, fetch: Fetch) -> None:
        results[name] = [fetch(k) for k in range(min(200, n))]
        first = next(iter(results.values()))
        assert results[name] == first, f"{name} returned other bytes than {next(iter(results))}"

    with (
        tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp,
        RedisServer(Path(tmp) / "standalone") as server,
    ):
        _load(redis.Redis(port=server.port, socket_timeout=60), src)
        reader = FeatureReader(connect_standalone(server.url, 5.0), PREFIX, 5.0)
        reader.current()
        # The readers' fetch is a coroutine (the service awaits it); one loop for the whole run, so the standalone
        # reader's pipelined connection is made once, as in a worker.
        loop = asyncio.new_event_loop()

        def standalone(k: int) -> tuple[bytes | None, list[bytes | None]]:
            got = loop.run_until_complete(reader.fetch(reqs[k].user_id, pick(k)))
            return (None if got.user is None else got.user.tobytes()), got.values

        check("standalone", standalone)
        rows.append(_measure("standalone redis-server (reference)", standalone, n, [server.port], [1.0]))

        with RedisCluster(Path(tmp) / "cluster", masters=3) as cluster:
            admin = connect(
                FeatureStoreSettings(redis_url=cluster.url, redis_cluster=True, redis_timeout_seconds=60)
            )
            assert isinstance(admin, ClusterClient)
            version = _load(admin, src)
            ports = [p for _, p in cluster.startup_nodes]
            creader = ClusterFeatureReader(ClusterClient.from_url(cluster.url, socket_timeout=5.0), PREFIX)
            creader.current()

            def copies(k: int) -> tuple[bytes | None, list[bytes | None]]:
                got = loop.run_until_complete(creader.fetch(reqs[k].user_id, pick(k)))
                return (None if got.user is None else got.user.tobytes()), got.values

            check("copies", copies)
            loaded = _share([float(redis.Redis(port=p).dbsize()) for p in ports])
            rows.append(_measure("Cluster: a restaurant copy per master (chosen)", copies, n, ports, loaded))
            # Both again, in the other order: the shared VM's speed drifts within a run.
            rows.append(
                _measure("standalone redis-server (second round)", standalone, n, [server.port], [1.0])
            )
            rows.append(_measure("Cluster: a copy per master (second round)", copies, n, ports, loaded))

            keys = FeatureKeys(PREFIX, version)
            node_of = admin.nodes_manager.get_node_from_slot
            pointer = pointer_key(PREFIX)
            pointer_node = node_of(key_slot(pointer.encode()))
            pipes = NodePipes(admin.nodes_manager, 5.0)  # the pipelined connections the reader uses
            # The other layouts' restaurant keys, with the same bytes, beside the loaded version (their requests
            # read no revision key: a slight advantage to them).
            layouts: dict[str, Callable[[int], str]] = {
                "one tag per version (previous layout)": lambda i: f"{keys.restaurant_base}{i}"
            }
            for res in (5, 4):
                cells = h3_cells(lat, lng, res)
                layouts[f"H3 res-{res} cell as tag"] = lambda i, c=cells, res=res: (
                    f"b:{version}:h{res}:{{{c[i]:x}}}{i}"
                )
            port_of = {f"127.0.0.1:{p}": k for k, p in enumerate(ports)}
            users_on = np.bincount(
                [port_of[node_of(key_slot(keys.user(int(u)).encode())).name] for u in src.users.ids.tolist()],
                minlength=len(ports),
            )
            for name, key in layouts.items():
                rkeys = [key(int(i)) for i in ids]
                mset(admin, rkeys, values)
                # This layout's keys per master (users + its restaurants), from the slot map.
                rests_on = np.bincount(
                    [port_of[node_of(key_slot(k.encode())).name] for k in rkeys], minlength=len(ports)
                )
                share = _share((users_on + rests_on).astype(float).tolist())

                def fetch(k: int, key: Callable[[int], str] = key) -> tuple[bytes | None, list[bytes | None]]:
                    user_key = keys.user(reqs[k].user_id)
                    plan: Plan = {}
                    _add(plan, node_of(key_slot(user_key.encode())), ("GET", user_key))
                    _add(plan, pointer_node, ("GET", pointer))
                    by_slot: dict[int, list[str]] = {}
                    for i in in_range[k].tolist():
                        rk = key(i)
                        by_slot.setdefault(key_slot(rk.encode()), []).append(rk)
                    mgets: list[Command] = []
                    for slot, rks in by_slot.items():
                        mgets.append(("MGET", *rks))
                        _add(plan, node_of(slot), mgets[-1])
                    replies = loop.run_until_complete(round_trips(plan, pipes))
                    got: dict[str, Any] = {}
                    for cmd in mgets:
                        got.update(zip(cmd[1:], replies[cmd], strict=True))
                    return replies[("GET", user_key)], [got[key(i)] for i in in_range[k].tolist()]

                check(name, fetch)
                rows.append(_measure(f"Cluster: {name}", fetch, n, ports, share))
    # Ratios against the standalone round measured last: the VM's speed moved 25× between rounds in one run
    # (2026-12-05, load average 12 from other agents), so the adjacent rounds are the comparable pair.
    _print(rows, rows[2])
    print(
        "  ratio: req/s against the standalone second round; µs are CPU per request (they vary less than req/s)"
    )


def _add(plan: Plan, node: ClusterNode, command: Command) -> None:
    plan.setdefault(node.name, (node, []))[1].append(command)
