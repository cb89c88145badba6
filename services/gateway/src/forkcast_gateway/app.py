"""The gateway app: ``create_app(settings)`` builds the parts once and wires the routes (routes/) behind the Edge.

/recommend is served by routes/recommend.RecommendRoute (the Edge calls it as plain ASGI ahead of FastAPI's
router; the FastAPI route documents it — the request schema through ``openapi_extra`` — and shares its
``process``). Redis clients: ``REDIS_URL`` for the rate-limit buckets, ``FORKCAST_EVENTS_REDIS_URL`` (default
``REDIS_URL``) for the feedback stream, ``FORKCAST_FEATURES_REDIS_URL`` (default ``REDIS_URL``) for admin
feature updates; one client per distinct URL.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.exceptions import HTTPException as StarletteHTTPException

from forkcast_gateway import openapi
from forkcast_gateway.access_log import AccessLog
from forkcast_gateway.auth import KeyStore
from forkcast_gateway.discovery import DnsDiscovery, make_resolver
from forkcast_gateway.edge import Edge, method_table
from forkcast_gateway.feature_updates import UpdateLog
from forkcast_gateway.feedback import FeedbackWriter
from forkcast_gateway.forwarding import Forwarder
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.ratelimit import FEEDBACK_KEY_PREFIX, RateLimiter
from forkcast_gateway.request_ids import RequestIds
from forkcast_gateway.responses import error_422
from forkcast_gateway.routes import admin, feedback, health, recommend
from forkcast_gateway.schemas import request_model
from forkcast_gateway.settings import GatewaySettings
from forkcast_gateway.upstreams import Upstreams, parse_upstreams

# FastAPI's detail for a body its JSON decoder could not even read (fastapi/routing.py, get_request_handler).
BODY_PARSE_ERROR = "There was an error parsing the body"

log = logging.getLogger("forkcast_gateway")


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client whose ``timeout_s`` is the whole cost of a hung Redis.

    Why no retries: redis-py 8's default (3 retries, exponential backoff) made one rate-limit check against a
    hung Redis take 6.4 s with a 0.2 s timeout (tests/test_auth_and_limits.py); the bucket and the feedback stream
    fail open or answer 503 instead, and the next request tries again.
    """
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


def build_api(settings: GatewaySettings, metrics: Metrics, keys: KeyStore | None, ids: RequestIds) -> FastAPI:
    upstreams = Upstreams(
        parse_upstreams(settings.upstreams, settings.breaker_failures, settings.breaker_open_s)
    )
    forwarder = Forwarder(
        upstreams,
        metrics,
        connect_timeout_s=settings.connect_timeout_s,
        total_timeout_s=settings.upstream_timeout_s,
        max_in_flight=settings.max_in_flight,
        pool_size=settings.pool_size,
    )

    def removed(base: str) -> None:
        """An endpoint DNS no longer names: drop its metric series and close its pooled connections."""
        metrics.forget_endpoint(base)
        forwarder.forget(base)

    discovery = DnsDiscovery(
        upstreams,
        make_resolver(settings.dns_server, settings.dns_timeout_s),
        settings.dns_refresh_s,
        settings.dns_retry_s,
        on_removed=removed,
    )
    clients: dict[str, aioredis.Redis] = {}

    def client_for(url: str | None) -> aioredis.Redis:
        url = url or settings.redis_url
        if url not in clients:
            clients[url] = redis_client(url, settings.redis_timeout_s)
        return clients[url]

    redis, events = client_for(settings.redis_url), client_for(settings.events_url)
    # The admin feature updates' Redis; a Cluster (FORKCAST_REDIS_CLUSTER) is discovered from the URL's node.
    feature_store: aioredis.Redis | RedisCluster = (
        RedisCluster.from_url(
            settings.features_redis_url or settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        if settings.redis_cluster
        else client_for(settings.features_redis_url)
    )
    writer = FeedbackWriter(
        events, settings.feedback_stream, settings.feedback_maxlen, settings.feedback_dedup_ttl_s
    )
    route = recommend.RecommendRoute(
        request_model(settings.max_candidates),
        forwarder,
        settings.max_body_bytes,
        settings.body_timeout_s,
        settings.max_candidates,
    )
    limiter = RateLimiter(redis, settings.rate_per_s, settings.rate_burst)
    feedback_limiter = RateLimiter(
        redis, settings.feedback_rate_per_s, settings.feedback_rate_burst, prefix=FEEDBACK_KEY_PREFIX
    )

    # The JSON access log is written at log level INFO or finer, as when it went through `logging`.
    access = AccessLog() if settings.access_log and settings.log_level in ("DEBUG", "INFO") else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await forwarder.start()
        await discovery.start()
        await limiter.warm()
        yield
        if access is not None:
            access.flush()
        await discovery.stop()
        await forwarder.stop()
        for client in clients.values():
            await client.aclose()
        if isinstance(feature_store, RedisCluster):
            await feature_store.aclose()

    api = FastAPI(
        title="forkcast",
        version="1",
        description="Restaurant recommendations (SPEC §6). Send your key in the `X-API-Key` header. Every "
        "response carries `x-request-id`, minted by the gateway for your key: send it back in /feedback. A "
        "method a path does not have is answered 405 with `Allow`, before the key is checked.",
        lifespan=lifespan,
    )
    api.state.forwarder, api.state.redis, api.state.route = forwarder, redis, route
    api.state.discovery, api.state.limiter, api.state.feedback_limiter = discovery, limiter, feedback_limiter
    api.state.access = access

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return error_422(list(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a JSON body it cannot decode at all (bytes that are not UTF-8: request.json() raises
        # UnicodeDecodeError, not JSONDecodeError) with a bare 400 that the published schema does not list
        # (schemathesis check ST103 found it on /feedback and /admin/features/*); it is the same client error as
        # malformed JSON, so it gets the same documented 422 ("json_invalid").
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            return error_422(
                [{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "input": {}}]
            )
        return await http_exception_handler(request, exc)

    routers = [
        recommend.router(route),
        feedback.router(writer, ids, keys, metrics),
        health.router(forwarder, upstreams, metrics, settings.upstream_timeout_s),
        admin.router(
            keys,
            feature_store,
            settings.feature_prefix,
            UpdateLog(events, settings.feature_updates_stream, settings.feature_updates_maxlen),
        ),
    ]
    for r in routers:
        api.include_router(r)
    # The Edge's 405 table: FastAPI 0.165 keeps included routers as wrappers without path/methods in api.routes,
    # so the routers' own routes (their paths already carry their prefixes) are listed beside the app's.
    api.state.methods = method_table([*api.routes, *(x for r in routers for x in r.routes)])
    openapi.install(api)
    return api


def create_app(settings: GatewaySettings) -> Edge:
    metrics = Metrics()
    keys = None if settings.auth_disabled else KeyStore(_keys_file(settings), settings.keys_reload_s)
    ids = RequestIds.from_file(settings.request_id_key_file)
    api = build_api(settings, metrics, keys, ids)
    state: Any = api.state
    return Edge(
        api,
        metrics,
        keys,
        state.limiter,
        state.feedback_limiter,
        ids,
        settings.max_body_bytes,
        settings.body_timeout_s,
        state.access,
        state.route,
        state.methods,
    )


def _keys_file(settings: GatewaySettings) -> pathlib.Path:
    if settings.api_keys_file is None:
        raise ValueError("FORKCAST_API_KEYS_FILE is required (or FORKCAST_AUTH_DISABLED=true, local only)")
    return settings.api_keys_file
