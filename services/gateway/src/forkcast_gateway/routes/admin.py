"""``/admin/*``: re-read the API key file, and replace one entity's features in the live feature version.

The Edge refuses keys without the admin scope (403) before routing, and answers 405 to a method a path does not
have before it looks at keys at all (issue 18.8: schemathesis saw 403 where 405 was due).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from forkcast_contract import api as limits
from forkcast_contract.api import USER_ID_PATTERN
from forkcast_contract.feature_store import FeatureKeys, restaurant_value, user_value
from forkcast_gateway.auth import KeyFileError, KeyStore
from forkcast_gateway.feature_updates import (
    NoLiveVersionError,
    UnknownEntityError,
    UpdateConflictError,
    UpdateLog,
    apply_update,
)
from forkcast_gateway.responses import ERRORS, RETRY, documented, error
from forkcast_gateway.schemas import (
    FeaturesUpdated,
    KeysReloaded,
    RestaurantFeaturesUpdate,
    UserFeaturesUpdate,
)

log = logging.getLogger("forkcast_gateway.admin")

_FORBIDDEN = documented(_403="The key lacks the admin scope.")
_FEATURE_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: ERRORS[code] for code in (401, 408, 413, 422, 429)},
    **_FORBIDDEN,
    **documented(
        _404="The id does not exist in the live feature version.",
        _409="No feature version is live.",
        _503="Feature store or update log unavailable, or busy; see Retry-After.",
    ),
}


def router(
    keys: KeyStore | None, store: aioredis.Redis | RedisCluster, prefix: str, updates: UpdateLog
) -> APIRouter:
    api = APIRouter(prefix="/admin")

    @api.post(
        "/keys/reload",
        response_model=KeysReloaded,
        responses={
            **{code: ERRORS[code] for code in (401, 408, 413, 429)},
            **_FORBIDDEN,
            **documented(_409="The key file could not be read or parsed; the previous keys stay in force."),
        },
        summary="Re-read the API key file (admin)",
    )
    async def reload_keys() -> KeysReloaded | JSONResponse:
        if keys is None:
            return KeysReloaded(keys=0)
        try:
            count = keys.reload_now()
        except (OSError, KeyFileError, UnicodeDecodeError) as exc:
            log.error("admin reload of %s refused, keeping %d keys: %s", keys.path, len(keys.keys), exc)
            return error(409, f"key file not loaded, keeping the {len(keys.keys)} current keys: {exc}")
        return KeysReloaded(keys=count)

    async def write(
        request: Request,
        entity: Literal["user", "restaurant"],
        entity_id: int,
        key_of: Callable[[FeatureKeys], str],
        value: bytes,
        bump: bool,
    ) -> FeaturesUpdated | JSONResponse:
        try:
            version = await apply_update(store, prefix, key_of, value, bump_restaurant_revision=bump)
        except UnknownEntityError as exc:
            return error(404, f"{entity} {entity_id} {exc}")
        except NoLiveVersionError as exc:
            return error(409, str(exc))
        except UpdateConflictError as exc:
            return error(503, str(exc), RETRY)
        except (aioredis.RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            # RedisClusterException is not a RedisError: redis-py raises it while the Cluster's slots are uncovered
            return error(503, f"feature store unavailable: {type(exc).__name__}", RETRY)
        try:  # only after the write succeeded: a logged update always happened
            await updates.record(entity, entity_id, version, value, request.state.key_id, time.time())
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            log.error("admin update of %s %d applied but not logged: %s", entity, entity_id, exc)
            return error(
                503,
                f"{entity} {entity_id} was updated in feature version {version} but the update log is "
                f"unavailable ({type(exc).__name__}); send the same update again",
                RETRY,
            )
        log.info("admin update of %s %d in feature version %s", entity, entity_id, version)
        return FeaturesUpdated(entity=entity, id=entity_id, feature_version=version)

    @api.put(
        "/features/users/{user_id}", response_model=FeaturesUpdated, responses=_FEATURE_ERRORS,
        summary="Replace one user's features in the live feature version (admin)",
    )  # fmt: skip
    async def update_user(
        user_id: Annotated[
            str,
            Path(pattern=USER_ID_PATTERN, description="`u` + digits or bare digits.", examples=["u00042"]),
        ],
        body: UserFeaturesUpdate,
        request: Request,
    ) -> FeaturesUpdated | JSONResponse:
        uid = int(user_id.removeprefix("u"))
        value = user_value(body.features)  # the schema already enforced the contract's checks
        return await write(request, "user", uid, lambda k: FeatureKeys.user(k, uid), value, False)

    @api.put(
        "/features/restaurants/{restaurant_id}", response_model=FeaturesUpdated, responses=_FEATURE_ERRORS,
        summary="Move one restaurant and replace its features in the live feature version (admin)",
    )  # fmt: skip
    async def update_restaurant(
        restaurant_id: Annotated[
            int,
            Path(ge=limits.CANDIDATE_ID_MIN, le=limits.CANDIDATE_ID_MAX, description="Restaurant id."),
        ],
        body: RestaurantFeaturesUpdate,
        request: Request,
    ) -> FeaturesUpdated | JSONResponse:
        value = restaurant_value(body.latitude, body.longitude, body.features)
        return await write(
            request,
            "restaurant",
            restaurant_id,
            lambda k: FeatureKeys.restaurant(k, restaurant_id),
            value,
            True,
        )

    return api
