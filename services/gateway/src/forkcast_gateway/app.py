"""The gateway app: ``create_app(settings)`` → the Edge middleware around a FastAPI app with the SPEC §6 routes.

/recommend is served by recommend.RecommendRoute (the Edge calls it as plain ASGI ahead of FastAPI's router; the
FastAPI route here documents it — the request schema through ``openapi_extra`` — and shares its ``process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import aiohttp
import redis.asyncio as aioredis
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from forkcast_contract import api as limits
from forkcast_contract.api import USER_ID_PATTERN
from forkcast_contract.feature_store import FeatureKeys, restaurant_value, user_value
from forkcast_gateway.auth import KeyStore
from forkcast_gateway.discovery import DnsDiscovery, make_resolver
from forkcast_gateway.edge import Edge
from forkcast_gateway.feature_updates import (
    NoLiveVersionError,
    UnknownEntityError,
    UpdateConflictError,
    apply_update,
)
from forkcast_gateway.feedback import FeedbackWriter
from forkcast_gateway.forwarding import Forwarder
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.ratelimit import RateLimiter
from forkcast_gateway.recommend import (
    BodyError,
    RecommendRoute,
    body_422,
    error_body,
    field_errors,
    receive_body,
)
from forkcast_gateway.schemas import (
    ErrorResponse,
    FeaturesUpdated,
    FeedbackAccepted,
    FeedbackEvent,
    Health,
    Readiness,
    RecommendResponse,
    RestaurantFeaturesUpdate,
    UserFeaturesUpdate,
    request_model,
)
from forkcast_gateway.settings import GatewaySettings
from forkcast_gateway.upstreams import Upstreams, parse_upstreams

log = logging.getLogger("forkcast_gateway")
_RETRY = {"retry-after": "1"}


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client whose ``timeout_s`` is the whole cost of a hung Redis.

    Why no retries: redis-py 8's default (3 retries, exponential backoff) made one rate-limit check against a
    hung Redis take 6.4 s with a 0.2 s timeout (tests/test_auth_and_limits.py); the bucket and the feedback stream
    fail open or answer 503 instead, and the next request tries again.
    """
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


def error_422(errs: list[Any]) -> Response:
    return Response(body_422(field_errors(errs)), status_code=422, media_type="application/json")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": []}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body of a request that reached FastAPI (same bounds as the Edge's fast path)."""
    return await receive_body(request.receive, limit, timeout_s)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid X-API-Key.",
        408: "The body was not received in time.",
        413: "The body is larger than FORKCAST_MAX_BODY_BYTES.",
        422: "Malformed request: `errors` names each field and the rule it broke.",
        429: "Rate limit of this key exceeded; see Retry-After.",
        503: "Overloaded, upstream down or circuit open; see Retry-After.",
    }.items()
}


def build_api(settings: GatewaySettings, metrics: Metrics, keys: KeyStore | None) -> FastAPI:
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
    discovery = DnsDiscovery(
        upstreams,
        make_resolver(settings.dns_server, settings.dns_timeout_s),
        settings.dns_refresh_s,
        settings.dns_retry_s,
        on_removed=metrics.forget_endpoint,
    )
    redis = redis_client(settings.redis_url, settings.redis_timeout_s)
    feedback = FeedbackWriter(
        redis, settings.feedback_stream, settings.feedback_maxlen, settings.feedback_dedup_ttl_s
    )
    route = RecommendRoute(
        request_model(settings.max_candidates), forwarder, settings.max_body_bytes, settings.body_timeout_s
    )
    features_url = settings.features_redis_url
    feature_store = (
        redis
        if features_url is None or features_url == settings.redis_url
        else redis_client(features_url, settings.redis_timeout_s)
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await forwarder.start()
        await discovery.start()
        await api.state.limiter.warm()
        yield
        await discovery.stop()
        await forwarder.stop()
        await redis.aclose()
        if feature_store is not redis:
            await feature_store.aclose()

    api = FastAPI(
        title="forkcast",
        version="1",
        description="Restaurant recommendations (SPEC §6). Send your key in the `X-API-Key` header.",
        lifespan=lifespan,
    )
    api.state.forwarder, api.state.redis, api.state.route = forwarder, redis, route
    api.state.discovery = discovery
    api.state.limiter = RateLimiter(redis, settings.rate_per_s, settings.rate_burst)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return error_422(list(exc.errors()))

    @api.post(
        "/recommend/{user_id}",
        response_model=RecommendResponse,
        responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "Unknown user."}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": route.model.model_json_schema()}},
            }
        },
        summary="Rank candidate restaurants for a user",
    )
    async def recommend(
        request: Request,
        user_id: Annotated[
            str,
            Path(pattern=USER_ID_PATTERN, description="`u` + digits or bare digits.", examples=["u00042"]),
        ],
    ) -> Response:
        try:
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        except BodyError as exc:
            return Response(error_body(str(exc)), exc.status, media_type="application/json")
        status, payload, headers = await route.process(user_id, body, request.state.request_id)
        return Response(payload, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    @api.post(
        "/feedback", status_code=202, response_model=FeedbackAccepted, responses=_ERRORS,
        summary="Record a click / no-click on a served recommendation",
    )  # fmt: skip
    async def post_feedback(event: FeedbackEvent) -> FeedbackAccepted | JSONResponse:
        try:
            entry = await feedback.write(event)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            return _error(503, f"feedback store unavailable: {type(exc).__name__}", _RETRY)
        metrics.feedback.labels("duplicate" if entry is None else "written").inc()
        return FeedbackAccepted(duplicate=entry is None, entry_id=entry)

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        session = forwarder.session
        assert session is not None
        timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_s)

        async def probe(base: str) -> bool:
            try:
                async with session.get(f"{base}/readyz", timeout=timeout) as r:
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        bases = [e.base for e in upstreams.endpoints]
        results = dict(zip(bases, await asyncio.gather(*(probe(b) for b in bases)), strict=True))
        ready = any(results.values())
        return JSONResponse(
            Readiness(ready=ready, upstreams=results).model_dump(), status_code=200 if ready else 503
        )

    @api.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post(
        "/admin/keys/reload", responses={403: {"model": ErrorResponse}}, summary="Re-read the API key file"
    )
    async def reload_keys() -> dict[str, int]:
        if keys is not None:
            keys.reload(force=True)
        return {"keys": len(keys.keys) if keys is not None else 0}

    _admin_feature_routes(api, feature_store, settings.feature_prefix)
    return api


_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: _ERRORS[code] for code in (401, 413, 422, 429)},
    403: {"model": ErrorResponse, "description": "The key lacks the admin scope."},
    404: {"model": ErrorResponse, "description": "The id does not exist in the live feature version."},
    409: {"model": ErrorResponse, "description": "No feature version is live."},
    503: {"model": ErrorResponse, "description": "Feature store unavailable or busy; see Retry-After."},
}


def _admin_feature_routes(api: FastAPI, store: aioredis.Redis, prefix: str) -> None:
    """``PUT /admin/features/{users,restaurants}/{id}``: replace one entity's values in the live version.

    The Edge refuses keys without the admin scope (403) before routing; the next /recommend sees the update
    (users are read per request; a restaurant update bumps the revision that makes inference reload positions).
    """

    async def write(
        entity: str, entity_id: int, key_of: Any, value: bytes, bump: bool
    ) -> FeaturesUpdated | JSONResponse:
        try:
            version = await apply_update(store, prefix, key_of, value, bump_restaurant_revision=bump)
        except UnknownEntityError as exc:
            return _error(404, f"{entity} {entity_id} {exc}")
        except NoLiveVersionError as exc:
            return _error(409, str(exc))
        except UpdateConflictError as exc:
            return _error(503, str(exc), _RETRY)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            return _error(503, f"feature store unavailable: {type(exc).__name__}", _RETRY)
        log.info("admin update of %s %d in feature version %s", entity, entity_id, version)
        return FeaturesUpdated(entity=entity, id=entity_id, feature_version=version)  # type: ignore[arg-type]

    @api.put(
        "/admin/features/users/{user_id}", response_model=FeaturesUpdated, responses=_ADMIN_ERRORS,
        summary="Replace one user's features in the live feature version (admin)",
    )  # fmt: skip
    async def update_user(
        user_id: Annotated[
            str,
            Path(pattern=USER_ID_PATTERN, description="`u` + digits or bare digits.", examples=["u00042"]),
        ],
        body: UserFeaturesUpdate,
    ) -> FeaturesUpdated | JSONResponse:
        uid = int(user_id.removeprefix("u"))
        value = user_value(body.features)  # the schema already enforced the contract's checks
        return await write("user", uid, lambda k: FeatureKeys.user(k, uid), value, False)

    @api.put(
        "/admin/features/restaurants/{restaurant_id}", response_model=FeaturesUpdated,
        responses=_ADMIN_ERRORS,
        summary="Move one restaurant and replace its features in the live feature version (admin)",
    )  # fmt: skip
    async def update_restaurant(
        restaurant_id: Annotated[
            int,
            Path(ge=limits.CANDIDATE_ID_MIN, le=limits.CANDIDATE_ID_MAX, description="Restaurant id."),
        ],
        body: RestaurantFeaturesUpdate,
    ) -> FeaturesUpdated | JSONResponse:
        value = restaurant_value(body.latitude, body.longitude, body.features)
        return await write(
            "restaurant", restaurant_id, lambda k: FeatureKeys.restaurant(k, restaurant_id), value, True
        )


def create_app(settings: GatewaySettings) -> Edge:
    metrics = Metrics()
    keys = None if settings.auth_disabled else KeyStore(_keys_file(settings), settings.keys_reload_s)
    api = build_api(settings, metrics, keys)
    return Edge(
        api, metrics, keys, api.state.limiter, settings.max_body_bytes, settings.access_log, api.state.route
    )


def _keys_file(settings: GatewaySettings) -> pathlib.Path:
    if settings.api_keys_file is None:
        raise ValueError("FORKCAST_API_KEYS_FILE is required (or FORKCAST_AUTH_DISABLED=true, local only)")
    return settings.api_keys_file
