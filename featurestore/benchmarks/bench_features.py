"""Feature-store benchmarks on the real data, each against a baseline measured in the same run.

    python featurestore/benchmarks/bench_features.py load    --data data/full  # loader rows/s, load+verify, bytes/user
    python featurestore/benchmarks/bench_features.py fetch   --data data/full  # 4 fetch designs, 3 distance filters
    python featurestore/benchmarks/bench_features.py cluster --data data/full  # standalone vs 3-master Cluster layouts

Each run starts its own redis-server (forkcast_devservers) on a free loopback port in a temporary directory, stopped
by PID at the end; nothing else is touched. Lives beside the package, not in it: the service never imports it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_cluster
import bench_fetch as bf
import numpy as np
import polars as pl
import redis

from forkcast_contract.dataset import REQUESTS_FILE
from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    FeatureKeys,
    pack_restaurants,
    pack_users,
    split_values,
)
from forkcast_devservers.servers import RedisServer
from forkcast_features.geo import h3_cells, h3_resolution, within_bbox, within_h3, within_haversine
from forkcast_features.loader import load_version
from forkcast_features.source import read_source
from forkcast_features.verify import verify_version


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=30)


def _load(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    src = read_source(args.data)
    t_read = time.perf_counter() - t0
    n_users, n_rests = len(src.users.ids), len(src.restaurants.ids)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp, RedisServer(Path(tmp)) as server:
        client = _client(server)
        # Baseline: the obvious loader, one pipelined SET per key, 1,000 per round trip.
        n_base = min(args.baseline_rows, n_users)
        values = split_values(pack_users(src.users.features[:n_base]), 120)
        t0 = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(n_base):
            pipe.set(f"base:u:{i}", values[i])
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        base_rate = n_base / (time.perf_counter() - t0)
        client.flushall()
        mem0 = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        result = load_version(
            client, src, prefix="fc", batch_rows=args.batch_rows, progress=not args.no_progress
        )
        t_load = time.perf_counter() - t0
        mem1 = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        verify_version(client, src, prefix="fc", version=result.version, sample=2000)
        t_verify = time.perf_counter() - t0
        keys = FeatureKeys("fc", result.version)
        sample = [client.memory_usage(keys.user(i)) or 0 for i in range(0, n_users, max(n_users // 1000, 1))]
        buckets = int(client.info("keyspace")["db0"]["keys"])
    rate = (n_users + n_rests) / t_load
    per_entity = (mem1 - mem0) / (n_users + n_rests)
    dict_share = 8 * (1 << (buckets - 1).bit_length()) / buckets  # hash-table slot per key
    print(f"rows: {n_users:,} users + {n_rests:,} restaurants; parquet read + validation {t_read:.1f} s")
    print(f"baseline (pipelined SET, 1,000/round trip): {base_rate:,.0f} rows/s on {n_base:,} users")
    print(
        f"loader (MSET in MULTI, {args.batch_rows:,} rows/batch): {rate:,.0f} rows/s, ratio {rate / base_rate:.1f}x"
    )
    print(
        f"load {t_load:.1f} s + verify {t_verify:.1f} s = {t_load + t_verify:.1f} s "
        f"(end to end with read: {t_read + t_load + t_verify:.1f} s)"
    )
    print(
        f"memory: {per_entity:.0f} B/entity (used_memory delta); user key MEMORY USAGE "
        f"{np.mean(sample):.0f} B + {dict_share:.0f} B hash-table slot = {np.mean(sample) + dict_share:.0f} B/user"
    )


def _timed(
    fn: Callable[[bf.Request], object], reqs: list[bf.Request], server: RedisServer
) -> tuple[float, float]:
    """(requests per second for one sequential client, Redis CPU µs per request)."""
    for r in reqs[:50]:
        fn(r)
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    for r in reqs:
        fn(r)
    wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
    return len(reqs) / wall, cpu / len(reqs) * 1e6


def _normalise(f: bf.Fetched) -> tuple[bytes | None, list[tuple[int, bytes | None]]]:
    return f[0], sorted(zip(f[1], f[2], strict=True))


def _fetch(args: argparse.Namespace) -> None:
    src = read_source(args.data)
    reqs = _requests(args.data, args.requests)
    r = src.restaurants
    order = np.argsort(r.ids)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp, RedisServer(Path(tmp)) as server:
        client = _client(server)
        version = load_version(client, src, prefix="fc", progress=False).version
        keys = FeatureKeys("fc", version)
        rvalues = split_values(
            pack_restaurants(r.latitude[order], r.longitude[order], r.features[order]), RESTAURANT_VALUE_BYTES
        )
        bf.prepare_aux(client, keys, r.ids[order], rvalues)
        designs: dict[str, Callable[[bf.Request], bf.Fetched]] = {
            "one MGET of user + 1,000 candidates (baseline)": bf.mget_all(client, keys),
            "two-step: MGET coordinates, then MGET in-range": bf.two_step(client, keys),
            f"hash buckets ({bf.HASH_BUCKETS}) with pipelined HMGET": bf.hash_hmget(client, keys),
            "coordinates in memory + revision, one MGET in-range": bf.CoordsInMemory(
                client, keys, len(r.ids)
            ).fetch,
        }
        reference = [_normalise(designs[next(iter(designs))](q)) for q in reqs[:200]]
        for name, fn in designs.items():
            assert [_normalise(fn(q)) for q in reqs[:200]] == reference, f"{name} disagrees with the baseline"
        print(
            f"fetch designs: {len(reqs):,} requests, {len(reqs[0].candidates):,} candidates each, "
            f"max_dist 5-10 km; one sequential client, Redis on the same 2 cores"
        )
        base = None
        for name, fn in designs.items():
            rps, redis_us = _timed(fn, reqs, server)
            base = base or rps
            print(
                f"  {name:<55} {rps:7,.0f} req/s ({rps / base:4.1f}x)  Redis {redis_us:6.1f} µs/req "
                f"-> Redis-bound cap {1e6 / redis_us:7,.0f} req/s"
            )
    lat, lng = r.latitude[order], r.longitude[order]
    cells = {res: h3_cells(lat, lng, res) for res in {h3_resolution(q.max_dist) for q in reqs}}
    filters: dict[str, Callable[[bf.Request], object]] = {
        "vectorised haversine (baseline)": lambda q: within_haversine(
            q.lat, q.lng, lat[q.candidates], lng[q.candidates], q.max_dist
        ),
        "bounding box, then haversine": lambda q: within_bbox(
            q.lat, q.lng, lat[q.candidates], lng[q.candidates], q.max_dist
        ),
        "H3 grid disk pre-filter, then haversine": lambda q: within_h3(
            q.lat,
            q.lng,
            lat[q.candidates],
            lng[q.candidates],
            cells[h3_resolution(q.max_dist)][q.candidates],
            h3_resolution(q.max_dist),
            q.max_dist,
        ),
    }
    for q in reqs[:500]:
        expect = sorted(filters["vectorised haversine (baseline)"](q).tolist())  # type: ignore[attr-defined]
        for name, filt in filters.items():
            assert sorted(filt(q).tolist()) == expect, f"{name} disagrees"  # type: ignore[attr-defined]
    print("distance filters on 1,000 candidates (coordinates in memory):")
    base_us = None
    for name, filt in filters.items():
        t0 = time.perf_counter()
        for q in reqs:
            filt(q)
        us = (time.perf_counter() - t0) / len(reqs) * 1e6
        base_us = base_us or us
        print(f"  {name:<45} {us:6.1f} µs/request ({base_us / us:4.2f}x the baseline's speed)")


def _requests(data: Path, n: int) -> list[bf.Request]:
    frame = pl.read_parquet(data / REQUESTS_FILE).head(n)
    cols = ("user_id", "latitude", "longitude", "candidate_restaurant_ids", "max_dist")
    return [
        bf.Request(int(u), float(a), float(b), np.asarray(c, dtype=np.int64), float(d))
        for u, a, b, c, d in frame.select(cols).iter_rows()
    ]


def _cluster(args: argparse.Namespace) -> None:
    reqs = _requests(args.data, args.requests)
    print(f"standalone vs 3-master Cluster: {len(reqs):,} requests, the user + its in-range candidates each")
    bench_cluster.run(read_source(args.data), reqs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_features.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="loader throughput, load+verify time and Redis bytes per user")
    load.add_argument(
        "--data", type=Path, default=Path("data/full"), help="dataset directory (default data/full)"
    )
    load.add_argument("--batch-rows", type=int, default=20_000, help="rows per MULTI/EXEC batch of MSETs")
    load.add_argument("--baseline-rows", type=int, default=200_000, help="users written by the SET baseline")
    load.add_argument("--no-progress", action="store_true", help="hide the loader's progress bar")
    fetch = sub.add_parser("fetch", help="fetch designs and distance filters on requests.parquet")
    fetch.add_argument(
        "--data", type=Path, default=Path("data/full"), help="dataset directory (default data/full)"
    )
    fetch.add_argument("--requests", type=int, default=2000, help="requests timed per design")
    clu = sub.add_parser("cluster", help="standalone vs restaurant layouts on a local 3-master Redis Cluster")
    clu.add_argument(
        "--data", type=Path, default=Path("data/full"), help="dataset directory (default data/full)"
    )
    clu.add_argument("--requests", type=int, default=2000, help="requests timed per layout")
    args = p.parse_args(argv)
    {"load": _load, "fetch": _fetch, "cluster": _cluster}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
