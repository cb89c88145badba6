"""The Redis connection and the few multi-key operations that differ between one node and a Cluster.

Everything else in this package talks to :data:`Client` through plain commands that both client kinds accept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis
from redis.cluster import RedisCluster

from forkcast_features.settings import FeatureStoreSettings

Client = redis.Redis | RedisCluster


def connect(settings: FeatureStoreSettings) -> Client:
    """A client for ``REDIS_URL``: a Cluster client when ``FORKCAST_REDIS_CLUSTER`` is set."""
    timeout = settings.redis_timeout_seconds
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def mset(
    client: Client,
    keys: Sequence[str],
    values: Sequence[bytes],
    *,
    then_hset: tuple[str, str, str] | None = None,
    chunk: int = 5000,
) -> None:
    """Write many keys in few round trips, then optionally HSET one field (a progress watermark).

    One node: one MULTI/EXEC pipeline of MSET commands of ``chunk`` pairs followed by the HSET. A plain
    pipeline is not enough: when an MSET fails (OOM) Redis still runs the HSET after it, and the watermark would
    claim rows that were never written (the OOM test caught exactly that). Inside MULTI an OOM at queueing aborts
    the whole batch (EXECABORT), so the watermark never runs ahead of the data. MSET of 5,000 pairs measured
    ≈ 3x the rows/s of pipelined SETs (`python featurestore/benchmarks/bench_features.py load`, BENCHMARKS.md).
    Cluster: redis-py groups the pairs by slot and pipelines per node; the HSET follows once all are acknowledged.
    """
    if isinstance(client, RedisCluster):
        for start in range(0, len(keys), chunk):
            part = dict(zip(keys[start : start + chunk], values[start : start + chunk], strict=True))
            client.mset_nonatomic(part)
        if then_hset is not None:
            client.hset(then_hset[0], then_hset[1], then_hset[2])
        return
    pipe = client.pipeline(transaction=then_hset is not None)
    for start in range(0, len(keys), chunk):
        flat: list[str | bytes] = []
        for pair in zip(keys[start : start + chunk], values[start : start + chunk], strict=True):
            flat.extend(pair)
        pipe.execute_command("MSET", *flat)  # type: ignore[no-untyped-call]
    if then_hset is not None:
        pipe.hset(then_hset[0], then_hset[1], then_hset[2])
    pipe.execute()


def mget(client: Client, keys: Sequence[str], *, chunk: int = 5000) -> list[bytes | None]:
    """Read many keys (split into chunks; on a Cluster, by slot)."""
    out: list[bytes | None] = []
    for start in range(0, len(keys), chunk):
        part = list(keys[start : start + chunk])
        if isinstance(client, RedisCluster):
            out.extend(client.mget_nonatomic(part))
        else:
            out.extend(client.mget(part))  # type: ignore[arg-type]
    return out


def count_existing(client: Client, keys: Sequence[str], *, chunk: int = 10_000) -> int:
    """How many of ``keys`` exist (EXISTS over batches; a Cluster client splits them by slot)."""
    total = 0
    if isinstance(client, RedisCluster):
        for start in range(0, len(keys), chunk):
            total += int(client.exists(*keys[start : start + chunk]))
        return total
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(keys), chunk):
        pipe.exists(*keys[start : start + chunk])
    return sum(int(n) for n in pipe.execute())


def scan_keys(client: Client, pattern: str, *, count: int = 1000) -> Iterator[bytes]:
    """Every key matching ``pattern`` (SCAN, never KEYS; a Cluster client scans every primary)."""
    yield from client.scan_iter(match=pattern, count=count)


def unlink(client: Client, keys: Sequence[bytes | str]) -> int:
    """Delete keys without blocking Redis (UNLINK frees memory in a background thread)."""
    if not keys:
        return 0
    return int(client.unlink(*keys))
