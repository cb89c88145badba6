"""The pieces of the /recommend hot path that were rewritten for CPU (issue 19.3) keep their exact behaviour: the
Edge's one-pass header map keeps the *first* of a repeated header, the limiter's await-free lease spend admits only
on a live lease, the upstream request head is byte for byte the documented one, a minted id has the shape and
tag that /feedback verifies and a nonce of its own, the lock-free histogram and counter write prometheus_client's
exposition, and the body deadline (one timer per loop) still ends a slow body in 408."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from forkcast_devservers.ports import free_port
from forkcast_gateway.body import BodyError, _deadlines, receive_body
from forkcast_gateway.edge import header_map
from forkcast_gateway.forwarding import Forwarder
from forkcast_gateway.metrics import _BUCKETS, LoopCounter, LoopHistogram, Metrics
from forkcast_gateway.ratelimit import RateLimiter
from forkcast_gateway.request_ids import NONCE_BATCH, RequestIds, Verdict, _b64, _unb64
from forkcast_gateway.upstream_pool import Pool, Response
from forkcast_gateway.upstreams import Upstreams, parse_upstreams


def test_the_first_of_a_repeated_header_wins() -> None:
    """The key check reads the first X-API-Key, as the list scan it replaced did: a client appending a second key
    header cannot change which key is checked."""
    found = header_map(
        [
            (b"x-api-key", b"first"),
            (b"content-length", b"7"),
            (b"x-api-key", b"second"),
            (b"x-request-id", b"r"),
        ]
    )
    assert found[b"x-api-key"] == b"first"
    assert found[b"content-length"] == b"7" and found[b"x-request-id"] == b"r"
    assert b"x-forkcast-key-id" not in found


def test_spend_admits_only_from_a_live_lease() -> None:
    """``spend`` never asks Redis: None (take decides) without a lease, with an empty one or an expired one."""
    limiter = RateLimiter(aioredis.Redis(port=free_port()), 100.0, 100)
    assert limiter.spend("k") is None, "admitted without any lease"
    limiter.leased["k"] = (2, time.monotonic() + 60)
    assert limiter.spend("k") is not None and limiter.spend("k") is not None
    assert limiter.leased["k"][0] == 0
    assert limiter.spend("k") is None, "admitted past the lease's tokens"
    limiter.leased["k"] = (5, time.monotonic() - 1)
    assert limiter.spend("k") is None, "admitted from an expired lease"


def test_the_upstream_request_head_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []

    async def record(self: Pool, data: bytes, connect_timeout_s: float, deadline: float) -> Response:
        sent.append(data)
        return Response(200, {b"x-model-version": b"m1"}, b'{"restaurants":[]}')

    monkeypatch.setattr(Pool, "request", record)
    port = free_port()
    forwarder = Forwarder(
        Upstreams(parse_upstreams(f"http://127.0.0.1:{port}", 5, 1.0)),
        Metrics(),
        connect_timeout_s=0.5,
        total_timeout_s=1.0,
        max_in_flight=4,
        pool_size=4,
    )
    body = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":2.0}'
    reply = asyncio.run(forwarder.recommend("u42", body, "rid.tag", "user"))
    assert sent == [
        b"POST /recommend/u42 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"x-request-id: rid.tag\r\nx-forkcast-key-id: user\r\nContent-Length: %d\r\n\r\n"
        % (port, len(body))
        + body
    ]
    assert (reply.status, reply.body) == (200, b'{"restaurants":[]}')
    assert reply.headers == [(b"x-model-version", b"m1"), (b"content-type", b"application/json")]


def test_a_minted_id_is_two_canonical_base64url_parts_that_verify() -> None:
    ids = RequestIds([b"s" * 32])
    for _ in range(500):  # every padding-free 16-byte encoding, '-' and '_' included, comes up in 500 draws
        rid = ids.mint("user")
        nonce_text, _, tag_text = rid.partition(".")
        for part in (nonce_text, tag_text):
            raw: Any = _unb64(part, 16)
            assert raw is not None and _b64(raw) == part, rid
        assert ids.verify(rid, "user") is Verdict.OWN, rid
        assert ids.verify(rid, "other") is Verdict.FORGED, rid


def test_nonces_are_never_reused_across_batches_or_after_a_fork() -> None:
    """Nonces come from one os.urandom read per NONCE_BATCH ids: every id of several batches has its own nonce, and
    a forked child drops the parent's unspent batch (else parent and child would mint the same ids)."""
    ids = RequestIds([b"s" * 32])
    nonces = [ids.mint("user").partition(".")[0] for _ in range(3 * NONCE_BATCH + 7)]
    assert len(set(nonces)) == len(nonces)
    ids.mint("user")
    assert ids._at != 0 and ids._nonces
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it inherited, then leaves at once
        os.write(write, b"%d" % len(ids._nonces))
        os._exit(0)
    os.close(write)
    inherited = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert inherited == b"0", f"the child kept {inherited!r} bytes of the parent's nonces"


def test_the_loop_histogram_writes_what_prometheus_clients_histogram_writes() -> None:
    """Same observations (bucket bounds exactly, +Inf, zero), same exposition, line for line, but ``_created``."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("x_seconds", "doc", ["route", "class"], _BUCKETS, ours)
    reference = Histogram("x_seconds", "doc", ["route", "class"], buckets=_BUCKETS, registry=theirs)
    for value in [0.0, 0.0005, *_BUCKETS, 0.0011, 0.3, 3.0, 99.0]:
        fast.labels("/r", "2xx").observe(value)
        reference.labels("/r", "2xx").observe(value)
    fast.labels("/r", "5xx").observe(0.01)
    reference.labels("/r", "5xx").observe(0.01)
    expected = [x for x in generate_latest(theirs).decode().splitlines() if "_created" not in x]
    assert generate_latest(ours).decode().splitlines() == expected
    fast.remove("/r", "5xx")
    assert 'class="5xx"' not in generate_latest(ours).decode()


def test_the_loop_counter_writes_what_prometheus_clients_counter_writes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopCounter("x_requests_total", "doc", ["route", "class"], ours)
    reference = Counter("x_requests_total", "doc", ["route", "class"], registry=theirs)
    for labels in [("/r", "2xx"), ("/r", "2xx"), ("/r", "4xx")]:
        fast.labels(*labels).inc()
        reference.labels(*labels).inc()
    expected = [x for x in generate_latest(theirs).decode().splitlines() if "_created" not in x]
    assert generate_latest(ours).decode().splitlines() == expected


def test_a_body_past_its_deadline_is_408_within_a_tick_and_other_cancels_propagate() -> None:
    """The body deadline is one timer per loop: a read that never completes ends 408 at most a tick late, a
    cancellation from elsewhere stays a cancellation, and no read leaves an entry behind."""

    async def never() -> dict[str, Any]:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def ticking(until: float, tick_s: float) -> float:
        """How late a chain of ``tick_s`` sleeps (the deadline timer's own pattern) passes ``until``: how late this
        loop runs meanwhile."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(tick_s)
        return loop.time() - until

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        beside = asyncio.ensure_future(ticking(t0 + 0.2, 0.02))  # 0.02 s: the tick of a 0.2 s deadline
        with pytest.raises(BodyError) as cut:
            await receive_body(never, 100, 0.2)
        late = loop.time() - t0 - 0.2
        assert cut.value.status == 408 and str(cut.value) == "request body not received within 0.2 s"
        # Never early; late by at most a tick (0.02 s) and 80 ms more than the loop itself ran late, measured beside
        # it (a fixed 0.1 s can fail on a starved CI machine, where the whole loop runs late); and under 1 s in any
        # case, so a stall that delays both alike (a deadline that waited on something) still fails.
        loop_late = await beside
        assert 0 <= late < loop_late + 0.1 and late < 1.0, (late, loop_late)
        reader = asyncio.ensure_future(receive_body(never, 100, 5.0))
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

        async def whole() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        assert await asyncio.gather(*(receive_body(whole, 100, 5.0) for _ in range(50))) == [b"{}"] * 50
        assert _deadlines(loop).pending == {}

    asyncio.run(scenario())


def test_the_body_deadlines_keep_no_closed_loop_alive() -> None:
    """One Deadlines per loop, held by a weak map: a loop that served a read and closed is collected with it."""

    async def whole() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    loops = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(receive_body(whole, 100, 5.0)) == b"{}"
        loops.append(weakref.ref(loop))
        loop.close()
        del loop
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
