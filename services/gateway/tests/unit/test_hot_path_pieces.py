"""The pieces of the /recommend hot path that were rewritten for CPU (issue 19.3) keep their exact behaviour: the
Edge's one-pass header map keeps the *first* of a repeated header, the limiter's await-free lease spend admits only
on a live lease, the upstream request head is byte for byte the documented one, and a minted id has the shape and
tag that /feedback verifies and a nonce of its own. The lock-free metric families and the body deadline, shared
with the inference, are tested with their module in contract/tests (test_loop_metrics.py, test_asgi_body.py)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from forkcast_devservers.ports import free_port
from forkcast_gateway.edge import header_map
from forkcast_gateway.forwarding import Forwarder
from forkcast_gateway.metrics import Metrics
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
