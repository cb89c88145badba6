"""Forward a validated recommendation request to an inference endpoint over pooled keep-alive connections.

Why upstream_pool and raw bytes (measurements on this workload): httpx.AsyncClient cost 1.6-4.4 ms of CPU per
forwarded request and grew with concurrency (encode/httpx#3215, issue 8); aiohttp's pooled session cost 0.3-0.5 ms
including validation (issue 8), and its client alone ≈ 4.3× the CPU of upstream_pool's httptools connections
(upstream_pool.Pool, issue 19); forwarding the bytes that were validated instead of re-serialising saved another
0.6-1 ms. The request is written as one pre-assembled HTTP/1.1 message.

Bounds, so that the gateway answers fast instead of queueing: at most ``max_in_flight`` forwarded requests (the
next is a 503 at once), a connect timeout and a total timeout per call, a breaker per endpoint, and exactly one
retry on another endpoint — only after a connection failure (refused, connect timeout, reset, closed), never after
an answer or a timeout. A reset may come after the upstream did the work: /recommend is a read (its prediction
event is keyed by the request id, which the retry keeps), so running it twice is harmless, and retrying a reset
took the fault drill's killed-replica errors from 3 in 3,194 requests to 0.

Headers sent upstream are built here, never copied from the client: the minted request id (X-Request-ID) and the
caller's key id (X-Forkcast-Key-Id), which the inference service records in its prediction event; a client-sent
X-Forkcast-Key-Id never reaches it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from forkcast_contract.api import (
    HEADER_FEATURE_VERSION,
    HEADER_KEY_ID,
    HEADER_MODEL_VERSION,
    HEADER_REQUEST_ID,
)
from forkcast_gateway.breaker import CircuitBreaker, State
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.upstream_pool import ConnectFailed, Pool, ProtocolError, Response
from forkcast_gateway.upstreams import Endpoint, Upstreams

# The upstream's answer headers relayed to the client, as ASGI sends them (lower-case bytes).
PASSED_HEADERS = tuple(h.encode() for h in (HEADER_MODEL_VERSION, HEADER_FEATURE_VERSION, "retry-after"))
_JSON_HEADER = (b"content-type", b"application/json")
# The request head after the user id: "\r\nHost: …" up to the request-id header's name.
_HEAD_MIDDLE = " HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n" + HEADER_REQUEST_ID + ": "
_HEAD_KEY_ID = f"\r\n{HEADER_KEY_ID}: "


class Reply(NamedTuple):
    """What the route answers. A NamedTuple, not a frozen dataclass, whose ``__init__`` (object.__setattr__ per
    field) cost 0.70-0.91 µs against 0.31-0.49 µs (timeit, 2-core VM under load, 2026-12-05)."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]  # as ASGI sends them: no re-encoding per request on the way out


class Unavailable(Exception):  # noqa: N818 — names the 503 it becomes
    """Answered 503 + Retry-After; ``reason`` goes into the body and the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Connection failures, safe to send again elsewhere (see the module docstring for resets): upstream_pool raises
# ConnectFailed for a refused connect, a connect that timed out (nothing reached the upstream: a starved or
# blackholed endpoint; before it was retried, the loaded 2-core VM's load test had 4 such 503s in 1,810 requests,
# each after ~150 ms), and a connection reset or closed before an answer (a replica killed mid-request).


class Forwarder:
    def __init__(
        self,
        upstreams: Upstreams,
        metrics: Metrics,
        *,
        connect_timeout_s: float,
        total_timeout_s: float,
        max_in_flight: int,
        pool_size: int,
    ) -> None:
        self.upstreams, self.metrics = upstreams, metrics
        self.connect_timeout_s, self.total_timeout_s = connect_timeout_s, total_timeout_s
        self.max_in_flight, self.pool_size = max_in_flight, pool_size
        self.in_flight = 0
        # Read at scrape time instead of inc()/dec() per request (each takes the gauge's lock).
        metrics.in_flight.set_function(lambda: self.in_flight)
        self.pools: dict[str, Pool] = {}
        self.heads: dict[
            str, str
        ] = {}  # endpoint base → its request head's middle (_HEAD_MIDDLE with its Host)
        self.published: dict[str, State] = {}  # endpoint base → breaker state last set on the gauge

    def pool(self, endpoint: Endpoint) -> Pool:
        """The endpoint's connection pool (made on first use, kept while the endpoint is known)."""
        pool = self.pools.get(endpoint.base)
        if pool is None:
            url = urlsplit(endpoint.base)
            context = ssl.create_default_context() if url.scheme == "https" else None
            port = url.port or (443 if context else 80)
            pool = Pool(
                url.hostname or "", port, [*(h.decode() for h in PASSED_HEADERS)], self.pool_size, context
            )
            self.pools[endpoint.base] = pool
            self.heads[endpoint.base] = _HEAD_MIDDLE.format(host=pool.host_header)
        return pool

    def forget(self, base: str) -> None:
        """Drop the pool of an endpoint DNS no longer names: idle connections close now, busy ones after their
        answer (a request in flight to a terminating pod is not cut off)."""
        self.published.pop(base, None)
        self.heads.pop(base, None)
        pool = self.pools.pop(base, None)
        if pool is not None:
            pool.drain()

    async def get(self, endpoint: Endpoint, path: str, timeout_s: float) -> Response:
        """``GET path`` on ``endpoint`` (the readiness probe); raises as :meth:`upstream_pool.Pool.request`."""
        pool = self.pool(endpoint)
        head = f"GET {path} HTTP/1.1\r\nHost: {pool.host_header}\r\n\r\n".encode()
        loop = asyncio.get_running_loop()
        return await pool.request(head, self.connect_timeout_s, loop.time() + timeout_s)

    async def start(self) -> None:
        """Nothing to open up front: each endpoint's pool connects on its first request."""

    async def stop(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        self.heads.clear()

    def _track(self, breaker: CircuitBreaker, endpoint: Endpoint) -> None:
        """Publish the endpoint's breaker state when it differs from the last one published (a gauge set per
        request took the gauge's lock for a value that almost never changes)."""
        if self.published.get(endpoint.base) is not breaker.state:
            self.published[endpoint.base] = breaker.state
            self.metrics.labelled(self.metrics.circuit_state, endpoint.base).set(int(breaker.state))

    async def recommend(self, user_text: str, body: bytes, request_id: str, key_id: str) -> Reply:
        if self.in_flight >= self.max_in_flight:
            self.metrics.overloaded.inc()
            raise Unavailable(f"gateway overloaded ({self.max_in_flight} requests in flight)")
        self.in_flight += 1
        try:
            return await self._send(user_text, body, request_id, key_id)
        finally:
            self.in_flight -= 1

    async def _send(self, user_text: str, body: bytes, request_id: str, key_id: str) -> Reply:
        if "\r" in (values := user_text + request_id + key_id) or "\n" in values:
            # The route checked the user id, the gateway minted the request id and the key file's pattern bounds
            # key ids; a CR or LF here would be a bug that splits the upstream request, so it never goes out.
            raise Unavailable("refused to forward a header value holding CR or LF")
        deadline = asyncio.get_running_loop().time() + self.total_timeout_s
        tries = 0
        last = "every upstream circuit is open"
        for endpoint in self.upstreams.candidates(user_text):
            if tries == 2:
                break
            breaker = endpoint.breaker
            if not breaker.allow():
                continue
            tries += 1
            if tries == 2:
                self.metrics.retries.inc()
            pool = self.pool(endpoint)
            # One concatenation instead of str.format with five keywords: 0.26-0.71 µs against 1.03-2.78 µs
            # (timeit, 2-core VM under load, 2026-12-05).
            head = (
                "POST /recommend/" + user_text + self.heads[endpoint.base] + request_id + _HEAD_KEY_ID + key_id
                + "\r\nContent-Length: " + str(len(body)) + "\r\n\r\n"
            )  # fmt: skip
            t0 = time.perf_counter()
            try:
                resp = await pool.request(head.encode() + body, self.connect_timeout_s, deadline)
            except ConnectFailed as exc:
                self._failed(endpoint, "connect_error", t0)
                self.upstreams.refresh_wanted()  # a pod that went away: re-resolve DNS upstreams early
                last = f"upstream {endpoint.group} unreachable: {exc}"
                continue  # nothing was processed: the one retry may go elsewhere
            except TimeoutError:
                self._failed(endpoint, "timeout", t0)
                raise Unavailable(f"upstream {endpoint.group} timed out") from None
            except ProtocolError as exc:
                self._failed(endpoint, "protocol_error", t0)
                raise Unavailable(f"upstream {endpoint.group} failed: {exc}") from None
            status = resp.status
            self.metrics.labelled(
                self.metrics.upstream, endpoint.group, "ok" if status < 500 else "error"
            ).observe(time.perf_counter() - t0)
            if status >= 500:
                # The upstream answered but cannot serve (Redis down, not ready): its failure, breaker counts it.
                breaker.failure()
                self.metrics.upstream_errors.labels(endpoint.group, f"status_{status}").inc()
            else:
                breaker.success()
            self._track(breaker, endpoint)
            passed = [(k, v) for k in PASSED_HEADERS if (v := resp.headers.get(k)) is not None]
            passed.append(_JSON_HEADER)
            return Reply(status, resp.body, passed)
        if tries == 0:
            self.metrics.circuit_open.inc()
        raise Unavailable(last)

    def _failed(self, endpoint: Endpoint, kind: str, t0: float) -> None:
        self.metrics.upstream.labels(endpoint.group, kind).observe(time.perf_counter() - t0)
        self.metrics.upstream_errors.labels(endpoint.group, kind).inc()
        endpoint.breaker.failure()
        self._track(endpoint.breaker, endpoint)
