"""Warm cutover against a real redis-server: atomic switch under concurrent readers (zero mixed reads), rollback,
refusals, and garbage collection of retired versions after their grace period."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import redis

from forkcast_contract.feature_store import pack_restaurants, pack_users, split_values
from forkcast_devservers.ready import wait_until
from forkcast_features.cutover import CutoverError, activate, collectable, gc, rollback
from forkcast_features.loader import load_version
from forkcast_features.reader import read_request
from forkcast_features.source import SourceData, read_source
from forkcast_features.verify import verify_version
from forkcast_features.versions import live_version, read_meta


def _load(client: redis.Redis, data: Path) -> tuple[str, SourceData]:
    src = read_source(data)
    version = load_version(client, src, prefix="fc", progress=False).version
    verify_version(client, src, prefix="fc", version=version, sample=200)
    return version, src


def _expected(src: SourceData) -> tuple[list[bytes], list[bytes]]:
    u, r = src.users, src.restaurants
    users = split_values(pack_users(u.features[np.argsort(u.ids)]), 120)
    order = np.argsort(r.ids)
    rests = split_values(pack_restaurants(r.latitude[order], r.longitude[order], r.features[order]), 48)
    return users, rests


def test_cutover_under_concurrent_readers_never_mixes_versions(
    tiny_data: Path, tiny_drifted: Path, redis_server: object, client: redis.Redis
) -> None:
    a, src_a = _load(client, tiny_data)
    b, src_b = _load(client, tiny_drifted)
    expected = {a: _expected(src_a), b: _expected(src_b)}
    assert expected[a][0][0] != expected[b][0][0], (
        "the two datasets must differ for the test to mean anything"
    )
    activate(client, "fc", a)

    stop = threading.Event()
    seen: dict[str, int] = {a: 0, b: 0}
    mixed: list[str] = []
    port = client.connection_pool.connection_kwargs["port"]

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        conn = redis.Redis(port=port)
        while not stop.is_set():
            uid = int(rng.integers(len(src_a.users.ids)))
            rids = rng.choice(len(src_a.restaurants.ids), size=50, replace=False).tolist()
            got = read_request(conn, "fc", uid, rids)
            users, rests = expected[got.version]
            seen[got.version] += 1
            if got.user != users[uid] or any(
                v != rests[i] for v, i in zip(got.restaurants, rids, strict=True)
            ):
                mixed.append(f"{got.version} user {uid}")

    def after_some_reads(of: str) -> None:
        # Each flip waits until a few reads got the version it made live (test_cluster_cutover waits likewise): a
        # fixed 10 ms between flips let a starved CI machine run all 20 flips before the readers read between them.
        start = seen[of]
        wait_until(
            lambda: seen[of] >= start + 3 or not any(t.is_alive() for t in threads),
            timeout_s=30,
            what=f"reads of {of} between flips",
        )

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            activate(client, "fc", b)
            after_some_reads(b)
            rollback(client, "fc")
            after_some_reads(a)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert mixed == []
    assert seen[a] > 20 and seen[b] > 20, f"readers did not straddle the switches: {seen}"
    assert live_version(client, "fc") == a


def test_activation_refuses_unverified_and_unknown_versions(tiny_data: Path, client: redis.Redis) -> None:
    src = read_source(tiny_data)
    version = load_version(client, src, prefix="fc", progress=False).version  # loaded, not verified
    with pytest.raises(CutoverError, match="not verified"):
        activate(client, "fc", version)
    with pytest.raises(CutoverError, match="does not exist"):
        activate(client, "fc", "nope")
    with pytest.raises(CutoverError, match="no live version"):
        rollback(client, "fc")
    assert live_version(client, "fc") is None


def test_concurrent_switch_is_detected(tiny_data: Path, tiny_drifted: Path, client: redis.Redis) -> None:
    from forkcast_features.cutover import _switch

    a, _ = _load(client, tiny_data)
    b, _ = _load(client, tiny_drifted)
    activate(client, "fc", a)
    with pytest.raises(CutoverError, match=f"now {a}"):
        _switch(client, "fc", b, b)  # someone believes b is live: refused, nothing switched
    assert live_version(client, "fc") == a


def test_gc_keeps_live_and_grace_then_unlinks_retired(
    tiny_data: Path, tiny_drifted: Path, client: redis.Redis
) -> None:
    a, _ = _load(client, tiny_data)
    b, _ = _load(client, tiny_drifted)
    activate(client, "fc", a)
    activate(client, "fc", b)
    assert gc(client, "fc", grace_seconds=3600) == []  # a retired just now: still readable
    assert (
        read_request(redis.Redis(port=client.connection_pool.connection_kwargs["port"]), "fc", 0, [1]).version
        == b
    )
    assert [m.version for m in collectable(client, "fc", 0)] == [a]
    collected = gc(client, "fc", grace_seconds=0)
    assert [c.version for c in collected] == [a] and collected[0].keys > 10_000
    assert list(client.scan_iter(match=f"fc:{a}:*")) == []
    assert read_meta(client, "fc", a) is None
    assert read_meta(client, "fc", b) is not None and live_version(client, "fc") == b
    with pytest.raises(CutoverError, match=r"previous version .* gone"):
        rollback(client, "fc")
