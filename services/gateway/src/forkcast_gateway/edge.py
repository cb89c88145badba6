"""The edge in front of every route, as plain ASGI middleware: 405 for a method a path does not have, API key, rate
limit, request id, one body cap and read deadline, RED metrics and the JSON access log.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: the latter wraps every request in an extra task and
streams (≈ 100 µs per request in the issue's prototype); here the checks run inline before FastAPI routes, and a
refused request never reaches routing, validation or the upstream. An admitted ``POST /recommend/<id>`` is then
served by routes/recommend.RecommendRoute directly, without FastAPI's router (BENCHMARKS.md: ≈ −18 % gateway CPU
per request in a same-run A/B); every other route goes to FastAPI with its body already read here (body.py), so
every route has the same cap and deadline (issue 18.4).

Order, and why: a known path with another method → 405 + Allow before any key check (issue 18.8: a client key got
403 on ``GET /admin/keys/reload``); Content-Length over the cap → 413 before auth; then the key (401/403) and the
route's bucket (429; /feedback has its own, lower one); then the body. Each request gets an id minted here and
bound to the caller's key (request_ids.py); a client's X-Request-ID only comes back as X-Correlation-ID, and a
client-sent X-Forkcast-Key-Id is removed from the request before any route sees it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from forkcast_contract.api import HEADER_CORRELATION_ID, HEADER_KEY_ID, HEADER_REQUEST_ID
from forkcast_contract.asgi_body import BodyError, receive_body
from forkcast_gateway.access_log import AccessLog
from forkcast_gateway.auth import KeyStore
from forkcast_gateway.body import replay
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.ratelimit import RateLimiter
from forkcast_gateway.request_ids import NO_KEY, RequestIds, correlation_id
from forkcast_gateway.routes.recommend import RecommendRoute

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# (path regex, methods) of each route the app serves.
MethodTable = list[tuple[re.Pattern[str], frozenset[str]]]

# Open to anyone: probes, metrics scraping, and the contract users read.
EXEMPT = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
FEEDBACK = "/feedback"
_ROUTES = {FEEDBACK: FEEDBACK, **{p: p for p in EXEMPT}}
_KEY_ID_HEADER = HEADER_KEY_ID.encode()
_REQUEST_ID_HEADER = HEADER_REQUEST_ID.encode()
_CORRELATION_ID_HEADER = HEADER_CORRELATION_ID.encode()
_CLOSE = (b"connection", b"close")


def route_of(path: str) -> str:
    """The route template for metric labels (bounded: never the raw path, which holds user ids)."""
    if path.startswith("/recommend/"):
        return "/recommend/{user_id}"
    if path.startswith("/admin/"):
        return "/admin"
    return _ROUTES.get(path, "other")


def method_table(routes: Iterable[Any]) -> MethodTable:
    """(path regex, methods) of every Starlette/FastAPI route that has both (a mounted app has neither)."""
    table = []
    for r in routes:
        regex, methods = getattr(r, "path_regex", None), getattr(r, "methods", None)
        if regex is not None and methods:
            table.append((regex, frozenset(methods)))
    return table


def header_map(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Header name → value, the *first* value of a repeated name (as a scan from the front finds it).

    Why one dict: the Edge reads four headers per request; one C-level ``dict`` build replaced a generator scan and
    three Python loops over the list (3.2 → 1.3 µs per request for bench_gateway's 7 request headers, timeit,
    2-core VM under load, 2026-12-05).
    """
    return dict(reversed(headers))


async def _respond(send: Send, status: int, detail: str, extra: Headers) -> None:
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
        feedback_limiter: RateLimiter,
        ids: RequestIds,
        max_body_bytes: int,
        body_timeout_s: float,
        access: AccessLog | None,
        recommend: RecommendRoute | None = None,
        methods: MethodTable | None = None,
    ) -> None:
        self.app, self.metrics, self.keys, self.ids = app, metrics, keys, ids
        self.limiter, self.feedback_limiter = limiter, feedback_limiter
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s
        self.access, self.recommend, self.methods = access, recommend, methods or []
        # (route, method, status class) → its labelled counter and histogram children. `labels()` costs a lock,
        # a tuple and two dict lookups per call; the key set is bounded (route templates × methods × 5).
        self._red: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def allowed(self, path: str) -> frozenset[str] | None:
        """The methods the routes matching ``path`` accept; None when no route matches (404 comes later)."""
        found: frozenset[str] | None = None
        for regex, methods in self.methods:
            if regex.match(path):
                found = methods if found is None else found | methods
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        route = route_of(path)
        headers = scope["headers"]
        found = header_map(headers)
        if _KEY_ID_HEADER in found:  # only the gateway names the key (forwarding.py)
            scope["headers"] = [(k, v) for k, v in headers if k != _KEY_ID_HEADER]
        correlation = correlation_id(found.get(b"x-request-id"))
        status = 500
        verdict = self._check(found, path, method)
        if isinstance(verdict, str):  # admitted so far: the route's bucket decides
            verdict = await self._limit(path, verdict)
        key_id = verdict if isinstance(verdict, str) else NO_KEY
        rid = self.ids.mint(key_id)
        state = scope.setdefault("state", {})
        state["request_id"], state["key_id"] = rid, key_id
        ids: Headers = [(_REQUEST_ID_HEADER, rid.encode())]
        if correlation is not None:
            ids.append((_CORRELATION_ID_HEADER, bytes(correlation)))

        try:
            if not isinstance(verdict, str):
                status, detail, extra = verdict
                await _respond(send, status, detail, [*extra, *ids])
                return
            user = None if self.recommend is None else self.recommend.user_of(scope)
            if user is not None:
                # The route adds the id headers and returns its status itself: no send wrapper on the hot path
                # (a closure and one more coroutine per message; ≈ 1 µs per request, timeit, 2026-12-05).
                status = await self.recommend.asgi(scope, receive, send, user, ids)  # type: ignore[union-attr]
                return

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), *ids]
                await send(message)

            try:
                body = await receive_body(receive, self.max_body_bytes, self.body_timeout_s)
            except BodyError as exc:
                status = exc.status
                await _respond(send, status, str(exc), [_CLOSE, *ids])
                return
            await self.app(scope, replay(body, receive), send_with_id)
        finally:
            self._observe(route, method, status, time.perf_counter() - t0, rid, key_id, correlation, scope)

    def _observe(
        self,
        route: str,
        method: str,
        status: int,
        elapsed: float,
        rid: str,
        key_id: str,
        correlation: bytes | None,
        scope: Scope,
    ) -> None:
        red = self._red.get((route, method, status // 100))
        if red is None:
            cls = f"{status // 100}xx"
            red = self._red[(route, method, status // 100)] = (
                self.metrics.requests.labels(route, method, cls),
                self.metrics.duration.labels(route, cls),
            )
        red[0].inc()
        red[1].observe(elapsed)
        if self.access is not None:
            self.access.record(
                {
                    "ts": round(time.time(), 3),
                    "request_id": rid,
                    "correlation_id": None if correlation is None else correlation.decode(),
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "key_id": key_id or "-",
                    "client": (scope.get("client") or ("-",))[0],
                }
            )

    def _check(self, found: dict[bytes, bytes], path: str, method: str) -> str | tuple[int, str, Headers]:
        """The caller's key id (NO_KEY on an open route), or (status, detail, headers) of the refusal, before
        the rate limit (:meth:`_limit`)."""
        if not (method == "POST" and path.startswith("/recommend/")):  # the hot path has one method, POST
            allowed = self.allowed(path)
            if allowed is not None and method not in allowed:
                return 405, f"method {method} not allowed", [(b"allow", ", ".join(sorted(allowed)).encode())]
        length = found.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, f"request body exceeds {self.max_body_bytes} bytes", [_CLOSE]
        if path in EXEMPT:
            return NO_KEY
        key_id = "anonymous"
        if self.keys is not None:
            presented = found.get(b"x-api-key")
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
        return key_id

    async def _limit(self, path: str, key_id: str) -> str | tuple[int, str, Headers]:
        """``key_id`` when the route's bucket admits the request (NO_KEY, an open route, is not limited), or the
        429. A token of this replica's live lease is spent without a coroutine (the usual case)."""
        if key_id == NO_KEY:
            return key_id
        limiter = self.feedback_limiter if path == FEEDBACK else self.limiter
        decision = limiter.spend(key_id) or await limiter.take(key_id)
        if decision.error:
            self.metrics.rate_limit_errors.inc()
        if not decision.allowed:
            self.metrics.rate_limited.inc()
            return 429, "rate limit exceeded", [(b"retry-after", str(decision.retry_after_s).encode())]
        return key_id
