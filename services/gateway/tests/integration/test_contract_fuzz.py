"""Fuzzing the OpenAPI contract against the running gateway with the real inference service behind it.

Bodies are generated from the request schema that /openapi.json publishes (each property's type and bounds read
from it; hypothesis-jsonschema 0.23 does not run on this hypothesis), plus arbitrary
JSON and mutations of valid bodies; user ids from the published pattern and from the tiny dataset's real users.
For every input: no 5xx, and the response validates against the schema documented for its status code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from forkcast_contract.api import USER_ID_PATTERN
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.app import create_app
from forkcast_gateway.settings import GatewaySettings
from forkcast_gateway.testing import KEY, serve

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(scope="module")
def live(
    redis_server: RedisServer, keys_file: Path, inference_url: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    app = create_app(
        GatewaySettings(
            environment="local",
            REDIS_URL=redis_server.url,
            api_keys_file=keys_file,
            upstreams=inference_url,
            access_log=False,
            # Generous, not production's 0.1 s / 0.05 s / 1 s: every answer must be < 500, and on a starved CI
            # machine (app, client and inference on 2 cores) those timeouts can answer 503 (as conftest.make_gateway).
            redis_timeout_s=5.0,
            connect_timeout_s=2.0,
            upstream_timeout_s=10.0,
        )
    )
    with serve(app) as url, requests.Session() as session:
        spec = session.get(f"{url}/openapi.json", timeout=5).json()
        yield url, spec


SESSION = requests.Session()


def check(url: str, spec: dict[str, Any], user: str, raw: bytes) -> requests.Response:
    r = SESSION.post(f"{url}/recommend/{user}", data=raw, headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code < 500, (r.status_code, r.text, user, raw[:200])
    responses = spec["paths"]["/recommend/{user_id}"]["post"]["responses"]
    assert str(r.status_code) in responses, r.status_code
    schema = responses[str(r.status_code)]["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": spec["components"]}).validate(r.json())
    assert r.headers["x-request-id"]
    return r


def request_schema(spec: dict[str, Any]) -> dict[str, Any]:
    post = spec["paths"]["/recommend/{user_id}"]["post"]
    schema: dict[str, Any] = post["requestBody"]["content"]["application/json"]["schema"]
    return schema


users = st.one_of(
    st.integers(0, 12_000).map(lambda i: f"u{i:05d}"), st.from_regex(USER_ID_PATTERN[1:-1], fullmatch=True)
)


def from_property(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy one published property schema (the types this contract uses)."""
    kind = prop.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(prop.get("minimum"), prop.get("maximum"))
    if kind == "number":
        return st.floats(prop.get("minimum"), prop.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "array":
        return st.lists(
            from_property(prop["items"]), min_size=prop.get("minItems", 0), max_size=prop.get("maxItems")
        )
    raise AssertionError(f"the fuzzer does not know property type {kind!r}: extend it with the contract")


def from_object_schema(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(schema["required"])
    props = schema["properties"]
    return st.fixed_dictionaries(
        {k: from_property(v) for k, v in props.items() if k in required},
        optional={k: from_property(v) for k, v in props.items() if k not in required},
    )


def test_valid_bodies_from_the_published_schema(live: tuple[str, dict[str, Any]]) -> None:
    url, spec = live
    schema = request_schema(spec)
    # Candidates from the tiny dataset's id range too, so that many requests return restaurants.
    real_ids = st.lists(st.integers(0, 2500), min_size=1, max_size=300)
    statuses: set[int] = set()

    @FUZZ
    @given(body=from_object_schema(schema), ids=st.none() | real_ids, user=users)
    def run(body: dict[str, Any], ids: list[int] | None, user: str) -> None:
        if ids is not None:
            body = {**body, "candidate_restaurant_ids": ids}
        r = check(url, spec, user, json.dumps(body).encode())
        assert r.status_code in (200, 404), r.text
        statuses.add(r.status_code)

    run()
    assert statuses == {200, 404}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
URL_SAFE = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%")
fields = st.sampled_from(
    ["candidate_restaurant_ids", "latitude", "longitude", "size", "max_dist", "sort_dist"]
)


def test_invalid_inputs_never_5xx(live: tuple[str, dict[str, Any]]) -> None:
    url, spec = live
    base = {"candidate_restaurant_ids": [1, 2, 3], "latitude": 13.7, "longitude": 100.5}

    @FUZZ
    @given(
        user=users | st.text(alphabet=URL_SAFE, min_size=1, max_size=30),
        mutation=st.dictionaries(fields, json_values, min_size=1, max_size=3) | st.none(),
        raw=st.binary(max_size=64),
        pick=st.integers(0, 2),
    )
    def run(user: str, mutation: dict[str, Any] | None, raw: bytes, pick: int) -> None:
        body = raw if pick == 0 or mutation is None else json.dumps({**base, **mutation}).encode()
        check(url, spec, user, body)

    run()
