"""validation.FastCheck (msgspec) never admits a /recommend body that the published pydantic model refuses.

Why it matters: a body FastCheck accepts is forwarded without the pydantic model seeing it, so FastCheck looser
than the model would let through what the contract refuses. Stricter is harmless (the model then decides).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from forkcast_contract import api as limits
from forkcast_gateway.schemas import request_model
from forkcast_gateway.validation import FastCheck

MAX = 5
MODEL = request_model(MAX)
CHECK = FastCheck(MAX)
FIELDS = ["candidate_restaurant_ids", "latitude", "longitude", "size", "max_dist", "sort_dist", "szie"]


def model_accepts(body: bytes) -> bool:
    try:
        MODEL.model_validate_json(body)
    except ValidationError:
        return False
    return True


def valid(**change: Any) -> bytes:
    body: dict[str, Any] = {"candidate_restaurant_ids": [1, 2], "latitude": 13.75, "longitude": 100.5}
    body.update(change)
    return json.dumps(body).encode()


def test_valid_bodies_take_the_fast_path() -> None:
    for body in [
        valid(),
        valid(size=limits.SIZE_MAX, max_dist=1e300, sort_dist=True),
        valid(latitude=-90, longitude=180),
        valid(candidate_restaurant_ids=list(range(MAX))),
    ]:
        assert CHECK.accepts(body) and model_accepts(body), body


def test_the_configured_list_limit_is_checked_and_numbers_beyond_double_are_refused() -> None:
    """The Struct knows no configured limit (checked in ``accepts``); ``1e400`` would be inf, which both refuse."""
    too_many = valid(candidate_restaurant_ids=list(range(MAX + 1)))
    beyond_double = valid()[:-1] + b', "max_dist": 1e400}'
    for body in (too_many, beyond_double):
        assert not CHECK.accepts(body), body
        assert not model_accepts(body), body


def test_integral_float_goes_to_the_model() -> None:
    """``size: 1.0`` is not an int for msgspec: refused here, so the route's integral-float rule decides."""
    assert not CHECK.accepts(valid(size=1.0))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=MAX + 2),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=len(FIELDS)), st.booleans())
def test_fast_check_is_never_looser_than_the_model(fields: dict[str, Any], start_valid: bool) -> None:
    body = json.loads(valid()) | fields if start_valid else fields
    raw = json.dumps(body).encode()
    if CHECK.accepts(raw):
        assert model_accepts(raw), raw
