"""The edge in front of every route, as plain ASGI middleware: request id, API key, rate limit, body cap, RED
metrics and the JSON access log.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: the latter wraps every request in an extra task and
streams (≈ 100 µs per request in the issue's prototype); here the checks run inline before FastAPI routes, and a
refused request never reaches routing, validation or the upstream. An admitted ``POST /recommend/<id>`` is then
served by recommend.RecommendRoute directly, without FastAPI's router (BENCHMARKS.md: ≈ −18 % gateway CPU per request
in a same-run A/B); every other route goes to FastAPI.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from forkcast_contract.api import REQUEST_ID_MAX_LEN
from forkcast_gateway.auth import KeyStore
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.ratelimit import RateLimiter
from forkcast_gateway.recommend import RecommendRoute

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("forkcast_gateway.access")

# Open to anyone: probes, metrics scraping, and the contract users read.
EXEMPT = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
_ROUTES = {"/feedback": "/feedback", **{p: p for p in EXEMPT}}


def route_of(path: str) -> str:
    """The route template for metric labels (bounded: never the raw path, which holds user ids)."""
    if path.startswith("/recommend/"):
        return "/recommend/{user_id}"
    if path.startswith("/admin/"):
        return "/admin"
    return _ROUTES.get(path, "other")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


async def _respond(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        keys: KeyStore | None,
        limiter: RateLimiter,
        max_body_bytes: int,
        log_requests: bool,
        recommend: RecommendRoute | None = None,
    ) -> None:
        self.app, self.metrics, self.keys, self.limiter = app, metrics, keys, limiter
        self.max_body_bytes, self.log_requests, self.recommend = max_body_bytes, log_requests, recommend
        # (route, method, status class) → its labelled counter and histogram children. `labels()` costs a lock,
        # a tuple and two dict lookups per call; the key set is bounded (route templates × methods × 5).
        self._red: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._rid_prefix = f"gw-{os.getpid():x}-{os.urandom(3).hex()}-"
        self._rid_counter = 0

    def _request_id(self, scope: Scope) -> str:
        v = _header(scope, b"x-request-id")
        if v is not None and 0 < len(v) <= REQUEST_ID_MAX_LEN and all(0x21 <= c <= 0x7E for c in v):
            return v.decode()
        self._rid_counter += 1
        return f"{self._rid_prefix}{self._rid_counter}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path: str = scope["path"]
        route = route_of(path)
        rid = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        key_id = "-"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            refusal = await self._check(scope, path)
            if isinstance(refusal, tuple):
                status, detail, extra = refusal
                await _respond(send, status, detail, [*extra, rid_header])
            else:
                key_id = refusal
                user = None if self.recommend is None else self.recommend.user_of(scope)
                if user is not None:
                    await self.recommend.asgi(scope, receive, send_with_id, user)  # type: ignore[union-attr]
                else:
                    await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - t0
            method = scope["method"]
            red = self._red.get((route, method, status // 100))
            if red is None:
                cls = f"{status // 100}xx"
                red = self._red[(route, method, status // 100)] = (
                    self.metrics.requests.labels(route, method, cls),
                    self.metrics.duration.labels(route, cls),
                )
            red[0].inc()
            red[1].observe(elapsed)
            # The level check first: json.dumps ran for every request even when the logger dropped the line.
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "ts": round(time.time(), 3),
                            "request_id": rid,
                            "method": method,
                            "route": route,
                            "status": status,
                            "ms": round(elapsed * 1000, 3),
                            "key_id": key_id,
                            "client": (scope.get("client") or ("-",))[0],
                        }
                    )
                )

    async def _check(self, scope: Scope, path: str) -> str | tuple[int, str, list[tuple[bytes, bytes]]]:
        """The caller's key id, or (status, detail, headers) of the refusal."""
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, f"request body exceeds {self.max_body_bytes} bytes", []
        if path in EXEMPT:
            return "-"
        key_id = "anonymous"
        if self.keys is not None:
            presented = _header(scope, b"x-api-key")
            if not presented:
                self.metrics.auth_failures.labels("missing").inc()
                return 401, "missing X-API-Key header", [(b"www-authenticate", b"ApiKey")]
            key = self.keys.lookup(presented.decode("latin-1"))
            if key is None:
                self.metrics.auth_failures.labels("unknown").inc()
                return 401, "invalid API key", [(b"www-authenticate", b"ApiKey")]
            if path.startswith("/admin/") and "admin" not in key.scopes:
                self.metrics.auth_failures.labels("scope").inc()
                return 403, "this key lacks the admin scope", []
            key_id = key.key_id
        decision = await self.limiter.take(key_id)
        if decision.error:
            self.metrics.rate_limit_errors.inc()
        if not decision.allowed:
            self.metrics.rate_limited.inc()
            return 429, "rate limit exceeded", [(b"retry-after", str(decision.retry_after_s).encode())]
        return key_id
