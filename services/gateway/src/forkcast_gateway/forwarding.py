"""Forward a validated recommendation request to an inference endpoint over a pooled keep-alive aiohttp session.

Why aiohttp and raw bytes (issue 8's measurements on this workload): httpx.AsyncClient cost 1.6-4.4 ms of CPU
per forwarded request and grew with concurrency (encode/httpx#3215); aiohttp's pooled session cost 0.3-0.5 ms
including validation; forwarding the bytes that were validated instead of re-serialising saved another 0.6-1 ms.

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

import time
from dataclasses import dataclass

import aiohttp

from forkcast_contract.api import (
    HEADER_FEATURE_VERSION,
    HEADER_KEY_ID,
    HEADER_MODEL_VERSION,
    HEADER_REQUEST_ID,
)
from forkcast_gateway.breaker import CircuitBreaker
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.upstreams import Endpoint, Upstreams

PASSED_HEADERS = tuple((h, h.encode()) for h in (HEADER_MODEL_VERSION, HEADER_FEATURE_VERSION, "retry-after"))
_JSON_TYPE = {"content-type": "application/json"}
_JSON_HEADER = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]  # as ASGI sends them: no re-encoding per request on the way out


class Unavailable(Exception):  # noqa: N818 — names the 503 it becomes
    """Answered 503 + Retry-After; ``reason`` goes into the body and the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Connection failures, safe to send again elsewhere (see the module docstring for resets).
# A connect that timed out is one too (nothing reached the upstream): a starved or blackholed endpoint. Before it was
# listed here, it fell through to TimeoutError and answered 503 without the retry (the load test on the loaded
# 2-core VM: 4 such 503s in 1,810 requests, each after ~150 ms). ClientOSError covers refused connections
# (ClientConnectorError) and resets of an open one (a replica killed mid-request).
_CONNECT_ERRORS = (
    aiohttp.ClientOSError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
)


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
        self.timeout = aiohttp.ClientTimeout(total=total_timeout_s, sock_connect=connect_timeout_s)
        self.max_in_flight, self.pool_size = max_in_flight, pool_size
        self.in_flight = 0
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=30, ttl_dns_cache=300)
        # No cookie jar, no auto-decompression: the gateway only relays JSON bytes.
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _track(self, breaker: CircuitBreaker, endpoint: Endpoint) -> None:
        self.metrics.labelled(self.metrics.circuit_state, endpoint.base).set(int(breaker.state))

    async def recommend(self, user_text: str, body: bytes, request_id: str, key_id: str) -> Reply:
        if self.in_flight >= self.max_in_flight:
            self.metrics.overloaded.inc()
            raise Unavailable(f"gateway overloaded ({self.max_in_flight} requests in flight)")
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return await self._send(user_text, body, request_id, key_id)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _send(self, user_text: str, body: bytes, request_id: str, key_id: str) -> Reply:
        assert self.session is not None, "Forwarder.start() not awaited"
        headers = {**_JSON_TYPE, HEADER_REQUEST_ID: request_id, HEADER_KEY_ID: key_id}
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
            t0 = time.perf_counter()
            try:
                async with self.session.post(
                    f"{endpoint.base}/recommend/{user_text}", data=body, headers=headers
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
                    passed = [
                        (raw, v.encode())
                        for k, raw in PASSED_HEADERS
                        if (v := resp.headers.get(k)) is not None
                    ]
            except _CONNECT_ERRORS as exc:
                self._failed(endpoint, "connect_error", t0)
                self.upstreams.refresh_wanted()  # a pod that went away: re-resolve DNS upstreams early
                last = f"upstream {endpoint.group} unreachable: {type(exc).__name__}"
                continue  # nothing was processed: the one retry may go elsewhere
            except TimeoutError:
                self._failed(endpoint, "timeout", t0)
                raise Unavailable(f"upstream {endpoint.group} timed out") from None
            except aiohttp.ClientError as exc:
                self._failed(endpoint, "protocol_error", t0)
                raise Unavailable(f"upstream {endpoint.group} failed: {type(exc).__name__}") from None
            outcome = "ok" if status < 500 else "error"
            self.metrics.labelled(self.metrics.upstream, endpoint.group, outcome).observe(
                time.perf_counter() - t0
            )
            if status >= 500:
                # The upstream answered but cannot serve (Redis down, not ready): its failure, breaker counts it.
                breaker.failure()
                self.metrics.upstream_errors.labels(endpoint.group, f"status_{status}").inc()
            else:
                breaker.success()
            self._track(breaker, endpoint)
            passed.append(_JSON_HEADER)
            return Reply(status, payload, passed)
        if tries == 0:
            self.metrics.circuit_open.inc()
        raise Unavailable(last)

    def _failed(self, endpoint: Endpoint, kind: str, t0: float) -> None:
        self.metrics.upstream.labels(endpoint.group, kind).observe(time.perf_counter() - t0)
        self.metrics.upstream_errors.labels(endpoint.group, kind).inc()
        endpoint.breaker.failure()
        self._track(endpoint.breaker, endpoint)
