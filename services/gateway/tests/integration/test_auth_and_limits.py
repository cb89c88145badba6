"""API keys (missing, wrong, admin scope, rotation without restart) and the Redis token bucket across replicas."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests

from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.auth import KeyFileError, KeyStore, hash_key, parse_key_file
from forkcast_gateway.edge import Edge
from forkcast_gateway.ratelimit import _SCRIPT
from forkcast_gateway.testing import ADMIN_KEY, KEY, StandIn, serve, write_keys

BODY = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'


def test_key_file_parsing() -> None:
    keys = parse_key_file(f"# c\n\na:{hash_key('x')}\nb:{hash_key('y')}:admin\n")
    assert [(k.key_id, k.scopes) for k in keys] == [("a", frozenset()), ("b", frozenset({"admin"}))]
    for bad in ["a:1234", f"a:{hash_key('x')}:root", f"a:{hash_key('x')}\na:{hash_key('y')}", "no colon"]:
        with pytest.raises(KeyFileError):
            parse_key_file(bad)


def test_missing_wrong_right_key_and_exempt_routes(make_gateway: Callable[..., Edge]) -> None:
    upstream = StandIn()
    with serve(upstream) as up, serve(make_gateway(upstreams=up)) as gw:
        url = f"{gw}/recommend/u1"
        assert requests.post(url, data=BODY, timeout=5).status_code == 401
        wrong = requests.post(url, data=BODY, headers={"x-api-key": KEY + "x"}, timeout=5)
        assert wrong.status_code == 401
        assert KEY not in wrong.text
        assert requests.post(url, data=BODY, headers={"x-api-key": KEY}, timeout=5).status_code == 200
        assert len(upstream.hits) == 1  # refused requests never reached the upstream
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"]:
            assert requests.get(gw + path, timeout=5).status_code == 200, path
        reload = f"{gw}/admin/keys/reload"
        assert requests.post(reload, headers={"x-api-key": KEY}, timeout=5).status_code == 403
        r = requests.post(reload, headers={"x-api-key": ADMIN_KEY}, timeout=5)
        assert r.status_code == 200
        assert r.json() == {"keys": 2}


def test_keys_rotate_without_restart(make_gateway: Callable[..., Edge], tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys", {"old": ("old-secret-1", "")})
    with (
        serve(StandIn()) as up,
        serve(make_gateway(upstreams=up, api_keys_file=path, keys_reload_s=0.05)) as gw,
    ):
        url = f"{gw}/recommend/u1"
        assert (
            requests.post(url, data=BODY, headers={"x-api-key": "old-secret-1"}, timeout=5).status_code == 200
        )
        write_keys(tmp_path / "keys.new", {"new": ("new-secret-2", "")}).replace(path)  # atomic, as a mount
        # Until the reload (every 0.05 s) has dropped the old key; polled, as a fixed 0.1 s can be too short on a
        # starved CI machine.
        wait_until(
            lambda: (
                requests.post(url, data=BODY, headers={"x-api-key": "old-secret-1"}, timeout=5).status_code
                == 401
            ),
            timeout_s=10,
            what="the old key refused after the rotation",
        )
        assert (
            requests.post(url, data=BODY, headers={"x-api-key": "new-secret-2"}, timeout=5).status_code == 200
        )
        path.write_text("garbage\n")  # a broken file keeps the last good keys
        time.sleep(0.1)
        assert (
            requests.post(url, data=BODY, headers={"x-api-key": "new-secret-2"}, timeout=5).status_code == 200
        )


def test_keystore_refuses_a_broken_file_at_start(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("nope\n")
    with pytest.raises(KeyFileError):
        KeyStore(tmp_path / "k", 1.0)


def test_token_bucket_holds_across_replicas(make_gateway: Callable[..., Edge], redis_server: object) -> None:
    """Two gateway apps on one Redis share the key's bucket: burst 5 in all, then 429 with Retry-After."""
    upstream = StandIn()
    # 0.01 tokens/s (one per 100 s): at 0.5/s a token came back whenever the first six requests took over 2 s, as
    # they can on a starved CI machine.
    settings = {"rate_per_s": 0.01, "rate_burst": 5}
    with (
        serve(upstream) as up,
        serve(make_gateway(upstreams=up, **settings)) as a,
        serve(make_gateway(upstreams=up, **settings)) as b,
    ):
        # A fresh bucket per test run: the key id is shared, so take what is left first from a clean state.
        import redis

        redis.Redis.from_url(redis_server.url).delete("fc:gateway:ratelimit:user")  # type: ignore[attr-defined]
        codes = [
            requests.post(f"{gw}/recommend/u1", data=BODY, headers={"x-api-key": KEY}, timeout=5)
            for gw in [a, b, a, b, a, b, a]
        ]
        assert [r.status_code for r in codes] == [200] * 5 + [429] * 2
        assert int(codes[-1].headers["retry-after"]) >= 1
        assert len(upstream.hits) == 5
        # Another key has its own bucket; probes are never limited.
        assert (
            requests.post(
                f"{a}/recommend/u1", data=BODY, headers={"x-api-key": ADMIN_KEY}, timeout=5
            ).status_code
            == 200
        )
        assert requests.get(f"{a}/healthz", timeout=5).status_code == 200
        metrics = requests.get(f"{a}/metrics", timeout=5).text
        assert "forkcast_gateway_rate_limited_total 1.0" in metrics


def test_rate_limit_fails_open_when_redis_is_down(make_gateway: Callable[..., Edge]) -> None:
    from forkcast_devservers.ports import free_port

    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with serve(StandIn()) as up, serve(make_gateway(upstreams=up, REDIS_URL=dead_redis)) as gw:
        r = requests.post(f"{gw}/recommend/u1", data=BODY, headers={"x-api-key": KEY}, timeout=5)
        assert r.status_code == 200
        assert "forkcast_gateway_rate_limit_errors_total 1.0" in requests.get(f"{gw}/metrics", timeout=5).text


def test_leased_tokens_never_exceed_the_global_bucket(redis_server: object) -> None:
    """Two limiters (replicas) with leases of 5 tokens on one bucket of 100: exactly 100 admitted in all."""
    import asyncio

    import redis.asyncio as aioredis

    from forkcast_gateway.ratelimit import RateLimiter

    async def run() -> int:
        client = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        await client.delete("fc:gateway:ratelimit:lease-test")
        a, b = RateLimiter(client, 0.001, 100), RateLimiter(client, 0.001, 100)
        assert a.lease == 5
        admitted = 0
        for i in range(300):
            admitted += (await (a if i % 3 else b).take("lease-test")).allowed
        await client.aclose()
        return admitted

    assert asyncio.run(run()) == 100


def test_startup_connects_to_redis_and_loads_the_bucket_script(
    make_gateway: Callable[..., Edge], redis_server: RedisServer
) -> None:
    """The first request must not pay the first Redis handshake (70-150 ms measured): startup does it."""
    client = redis.Redis(port=redis_server.port)
    client.script_flush()
    sha = hashlib.sha1(_SCRIPT.encode()).hexdigest()
    assert client.script_exists(sha) == [False]
    with serve(StandIn()) as up, serve(make_gateway(upstreams=up)):
        assert client.script_exists(sha) == [True]  # no request has been sent yet


def test_lock_step_clients_below_the_limit_are_never_refused(redis_server: object) -> None:
    """10 concurrent requests every 0.3 s (33 req/s) on a 100/s bucket: all admitted, and the bucket is charged
    for what was spent, not for ten leases per burst (before the fix: 10 leases of 10 tokens per burst, 333/s)."""
    import asyncio

    import redis.asyncio as aioredis

    from forkcast_gateway.ratelimit import RateLimiter

    async def run() -> list[bool]:
        client = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        await client.delete("fc:gateway:ratelimit:lock-step")
        limiter = RateLimiter(client, 100.0, 200, lease_s=0.25)
        assert limiter.lease == 10
        admitted: list[bool] = []
        for _ in range(12):
            burst = await asyncio.gather(*(limiter.take("lock-step") for _ in range(10)))
            admitted += [d.allowed for d in burst]
            await asyncio.sleep(0.3)
        await client.aclose()
        return admitted

    admitted = asyncio.run(run())
    assert all(admitted), f"{admitted.count(False)} of {len(admitted)} refused below the limit"


def test_unspent_lease_tokens_go_back_to_the_bucket(redis_server: object) -> None:
    """A lease that expires with tokens left returns them with the next round trip (no refill: rate ≈ 0)."""
    import asyncio

    import redis.asyncio as aioredis

    from forkcast_gateway.ratelimit import RateLimiter

    async def run() -> tuple[float, float]:
        client = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        key = "fc:gateway:ratelimit:refund"
        await client.delete(key)
        limiter = RateLimiter(client, 0.001, 100, lease_s=0.05)
        await limiter.take("refund")  # leases 5, spends 1
        after_first = float(await client.hget(key, "tokens"))
        await asyncio.sleep(0.1)  # the lease expires with 4 unspent
        await limiter.take("refund")  # refunds 4, leases 5 again, spends 1
        after_second = float(await client.hget(key, "tokens"))
        await client.aclose()
        return after_first, after_second

    first, second = asyncio.run(run())
    assert first == pytest.approx(95, abs=0.01)
    assert second == pytest.approx(94, abs=0.01)  # 100 − 1 spent − 5 leased, not 90


def test_a_hung_redis_does_not_queue_requests_behind_its_timeout() -> None:
    """Concurrent requests on a key whose bucket round trip hangs: one waits for the timeout, the rest pass at once."""
    import asyncio
    import socket

    from forkcast_gateway.app import redis_client
    from forkcast_gateway.ratelimit import RateLimiter

    async def run() -> tuple[list[bool], float]:
        # A listener that accepts and never answers: Redis hung (SIGSTOP), not refused.
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        port = server.getsockname()[1]
        client = redis_client(f"redis://127.0.0.1:{port}/0", 0.2)  # the gateway's own client settings
        limiter = RateLimiter(client, 100.0, 200)
        started = time.monotonic()
        decisions = await asyncio.gather(*(limiter.take("hung") for _ in range(20)))
        elapsed = time.monotonic() - started
        server.close()
        return [d.allowed and d.error for d in decisions], elapsed

    passed, elapsed = asyncio.run(run())
    assert all(passed)
    # Queued, the 20 would take 20 × 0.2 s = 4 s; 2 s leaves a starved CI machine room and still tells them apart.
    assert elapsed < 2.0, f"20 requests took {elapsed:.2f} s: they queued behind the 0.2 s timeout"
