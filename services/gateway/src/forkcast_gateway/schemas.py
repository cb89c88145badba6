"""The public contract (SPEC §6) as pydantic models: what /openapi.json and /docs show, and what is validated.

Limits come from forkcast_contract.api, shared with the inference service's msgspec schema. Models are strict
(no "12" for 12, no 1 for true) and forbid unknown fields, so a typo such as ``szie`` is a 422, not a silent
default. ``max_candidates`` is configurable, so the list length is checked by the app against the settings; the
default is what the schema documents. An integer field also takes an integral float (1.0): JSON Schema counts it
as an integer, so the published schema admits it (routes/recommend.py ``integral_floats`` for the /recommend fast
path, :func:`_integral` for the FastAPI routes).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from forkcast_contract import api as limits
from forkcast_contract.feature_store import FLOAT32_MAX
from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)

CandidateId = Annotated[int, Field(ge=limits.CANDIDATE_ID_MIN, le=limits.CANDIDATE_ID_MAX)]


def _integral(value: Any) -> Any:
    """1.0 → 1 (JSON Schema's integer includes it); anything else is left for the strict int check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds first, then the validator: in the other order pydantic publishes them as unknown "ge"/"le" keys.
JsonCandidateId = Annotated[
    int, Field(ge=limits.CANDIDATE_ID_MIN, le=limits.CANDIDATE_ID_MAX), BeforeValidator(_integral)
]
RequestId = Annotated[
    str, Field(min_length=1, max_length=limits.REQUEST_ID_MAX_LEN, pattern=r"^[\x21-\x7e]+$")
]


class RecommendRequest(BaseModel):
    """Candidates to rank for one user at one place."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"candidate_restaurant_ids": [12, 345, 6789], "latitude": 13.75, "longitude": 100.5}]
        },
    )

    candidate_restaurant_ids: list[CandidateId] = Field(
        min_length=1,
        max_length=limits.MAX_CANDIDATES_DEFAULT,
        description="Restaurant ids to rank (≥ 0). Unknown ids are skipped; duplicates count once. "
        f"At most {limits.MAX_CANDIDATES_DEFAULT} by default (FORKCAST_MAX_CANDIDATES).",
        examples=[[12, 345, 6789]],
    )
    latitude: float = Field(
        ge=limits.LATITUDE_MIN, le=limits.LATITUDE_MAX, allow_inf_nan=False,
        description="The user's WGS84 latitude in degrees.", examples=[13.75],
    )  # fmt: skip
    longitude: float = Field(
        ge=limits.LONGITUDE_MIN, le=limits.LONGITUDE_MAX, allow_inf_nan=False,
        description="The user's WGS84 longitude in degrees.", examples=[100.5],
    )  # fmt: skip
    size: int = Field(
        default=limits.SIZE_DEFAULT, ge=limits.SIZE_MIN, le=limits.SIZE_MAX,
        description="How many restaurants to return at most.", examples=[20],
    )  # fmt: skip
    max_dist: float = Field(
        default=limits.MAX_DIST_DEFAULT_M, ge=limits.MAX_DIST_MIN_M, allow_inf_nan=False,
        description="Keep candidates within this great-circle distance in metres (R = 6,371,008.8 m).",
        examples=[5000.0],
    )  # fmt: skip
    sort_dist: bool = Field(
        default=False, description="true: nearest first; false: highest score first (ties by id)."
    )


class Restaurant(BaseModel):
    id: int = Field(description="Restaurant id.", examples=[345])
    score: float = Field(ge=0.0, le=1.0, description="sigmoid(logit) of the deployed model.", examples=[0.83])
    displacement: float = Field(ge=0.0, description="Great-circle distance in metres.", examples=[812.4])


class RecommendResponse(BaseModel):
    """Candidates within max_dist, sorted, truncated to size. Headers: x-model-version, x-feature-version,
    x-request-id (minted by the gateway; send it back in /feedback), x-correlation-id (the caller's own
    X-Request-ID, echoed when it is 1-64 of [A-Za-z0-9._:-])."""

    restaurants: list[Restaurant]


class FieldError(BaseModel):
    field: str = Field(description="Where: the field's path, e.g. candidate_restaurant_ids.3.")
    rule: str = Field(description="Which rule failed, e.g. greater_than_equal, missing, json_invalid.")
    message: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, for a person.")
    errors: list[FieldError] = Field(default_factory=list, description="Per-field failures (422 only).")


class FeedbackEvent(BaseModel):
    """Whether the user clicked a restaurant of a served recommendation."""

    model_config = _STRICT

    request_id: RequestId = Field(
        description="The x-request-id of a recommendation response this API key received (403 otherwise)."
    )
    restaurant_id: JsonCandidateId = Field(description="A restaurant of that response.", examples=[345])
    clicked: bool = Field(description="true: clicked; false: shown and not clicked.")
    time: float = Field(
        default_factory=time.time, gt=0, lt=1e11, allow_inf_nan=False,
        description="When, in Unix seconds (default: arrival at the gateway).", examples=[1795000000.0],
    )  # fmt: skip


class FeedbackAccepted(BaseModel):
    duplicate: bool = Field(
        description="true: this (request_id, restaurant_id) was already recorded; ignored."
    )
    entry_id: str | None = Field(description="The stream entry id, when written.")


# Stored as float32: a finite float64 beyond its range would become inf in the store, so it is refused here.
FeatureValue = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False)]


class UserFeaturesUpdate(BaseModel):
    """A user's full feature vector (the model's user inputs, in the dataset's column order)."""

    model_config = _STRICT

    features: list[FeatureValue] = Field(
        min_length=USER_FEATURE_COUNT, max_length=USER_FEATURE_COUNT,
        description=f"Exactly {USER_FEATURE_COUNT} finite numbers (stored as float32).",
        examples=[[0.5] * USER_FEATURE_COUNT],
    )  # fmt: skip


class RestaurantFeaturesUpdate(BaseModel):
    """A restaurant's position and full feature vector."""

    model_config = _STRICT

    latitude: float = Field(
        ge=limits.LATITUDE_MIN, le=limits.LATITUDE_MAX, allow_inf_nan=False,
        description="WGS84 latitude in degrees (stored to 1e-7°).", examples=[13.75],
    )  # fmt: skip
    longitude: float = Field(
        ge=limits.LONGITUDE_MIN, le=limits.LONGITUDE_MAX, allow_inf_nan=False,
        description="WGS84 longitude in degrees (stored to 1e-7°).", examples=[100.5],
    )  # fmt: skip
    features: list[FeatureValue] = Field(
        min_length=RESTAURANT_FEATURE_COUNT, max_length=RESTAURANT_FEATURE_COUNT,
        description=f"Exactly {RESTAURANT_FEATURE_COUNT} finite numbers (stored as float32).",
        examples=[[0.5] * RESTAURANT_FEATURE_COUNT],
    )  # fmt: skip


class FeaturesUpdated(BaseModel):
    entity: Literal["user", "restaurant"]
    id: int = Field(ge=0)
    feature_version: str = Field(description="The live feature version the update was written to.")


class KeysReloaded(BaseModel):
    keys: int = Field(ge=0, description="How many API keys the gateway now holds.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    upstreams: dict[str, bool] = Field(description="Per upstream endpoint: did its /readyz answer 200.")


def request_model(max_candidates: int) -> type[RecommendRequest]:
    """RecommendRequest with the configured candidate limit (the documented default is the contract's)."""
    if max_candidates == limits.MAX_CANDIDATES_DEFAULT:
        return RecommendRequest
    field = RecommendRequest.model_fields["candidate_restaurant_ids"]
    return create_model(
        "RecommendRequest",
        __base__=RecommendRequest,
        candidate_restaurant_ids=(
            list[CandidateId],
            Field(min_length=1, max_length=max_candidates, description=field.description),
        ),
    )
