"""The admin feature live-update endpoint against a real Redis and the real inference service: an update is seen
by the very next /recommend through the gateway; scope, validation and unknown ids are refused and write nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from forkcast_contract.feature_store import (
    FeatureKeys,
    meta_key,
    pointer_key,
    unpack_restaurants,
    unpack_users,
)
from forkcast_contract.streams import FEATURE_UPDATE_FIELDS, FEATURE_UPDATES_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.edge import Edge
from forkcast_gateway.testing import ADMIN_KEY, KEY, serve
from forkcast_inference.testing import PREFIX

USER, RESTAURANT = 7, 5
NEAR = {"candidate_restaurant_ids": list(range(200)), "latitude": 13.75, "longitude": 100.5}


@pytest.fixture
def gateway(make_gateway: Callable[..., Edge], inference_url: str) -> Iterator[str]:
    with serve(make_gateway(upstreams=inference_url, feature_prefix=PREFIX)) as url:
        yield url


@pytest.fixture
def keys(redis_server: RedisServer) -> FeatureKeys:
    live = redis.Redis(port=redis_server.port).get(pointer_key(PREFIX))
    assert isinstance(live, bytes)
    return FeatureKeys(PREFIX, live.decode())


def put(url: str, path: str, body: Any, key: str = ADMIN_KEY) -> requests.Response:
    data = body if isinstance(body, bytes) else None
    js = None if isinstance(body, bytes) else body
    headers = {"x-api-key": key, "content-type": "application/json"}
    return requests.put(f"{url}/admin/features/{path}", data=data, json=js, headers=headers, timeout=5)


def recommend(url: str, user: int, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{url}/recommend/u{user}", json=body, headers={"x-api-key": KEY}, timeout=5)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_user_update_is_seen_by_the_next_recommend(
    gateway: str, redis_server: RedisServer, keys: FeatureKeys
) -> None:
    client = redis.Redis(port=redis_server.port)
    original = unpack_users([client.get(keys.user(USER))])[0].tolist()  # type: ignore[list-item]
    updates_before = int(client.hget(meta_key(PREFIX, keys.version), "updates") or 0)  # type: ignore[arg-type]
    before = recommend(gateway, USER, NEAR)["restaurants"]
    assert before
    new = [3.0 - v for v in original]
    try:
        r = put(gateway, f"users/u{USER:05d}", {"features": new})
        assert r.status_code == 200, r.text
        assert r.json() == {"entity": "user", "id": USER, "feature_version": keys.version}
        after = recommend(gateway, USER, NEAR)["restaurants"]
        assert [x["score"] for x in after] != [x["score"] for x in before]
        stored = unpack_users([client.get(keys.user(USER))])[0]  # type: ignore[list-item]
        assert stored.tolist() == pytest.approx(new, rel=1e-6)
        assert int(client.hget(meta_key(PREFIX, keys.version), "updates")) == updates_before + 1  # type: ignore[arg-type]
    finally:
        assert put(gateway, f"users/{USER}", {"features": original}).status_code == 200
    assert recommend(gateway, USER, NEAR)["restaurants"] == before


def test_restaurant_move_is_seen_by_the_next_recommend(
    gateway: str, redis_server: RedisServer, keys: FeatureKeys
) -> None:
    client = redis.Redis(port=redis_server.port)
    was = unpack_restaurants([client.get(keys.restaurant(RESTAURANT))])  # type: ignore[list-item]
    lat, lng, feats = float(was.latitude[0]), float(was.longitude[0]), was.features[0].tolist()
    away = {
        "candidate_restaurant_ids": [RESTAURANT],
        "latitude": lat + 1.0,
        "longitude": lng,
        "max_dist": 1000,
    }
    assert recommend(gateway, 1, away)["restaurants"] == []
    try:
        r = put(
            gateway, f"restaurants/{RESTAURANT}", {"latitude": lat + 1.0, "longitude": lng, "features": feats}
        )
        assert r.status_code == 200, r.text
        got = recommend(gateway, 1, away)["restaurants"]
        assert [x["id"] for x in got] == [RESTAURANT]
        assert got[0]["displacement"] < 0.5
    finally:
        back = {"latitude": lat, "longitude": lng, "features": feats}
        assert put(gateway, f"restaurants/{RESTAURANT}", back).status_code == 200
    assert recommend(gateway, 1, away)["restaurants"] == []


def test_a_key_without_admin_scope_is_403_and_writes_nothing(
    gateway: str, redis_server: RedisServer, keys: FeatureKeys
) -> None:
    client = redis.Redis(port=redis_server.port)
    before = client.get(keys.user(USER))
    r = put(gateway, f"users/{USER}", {"features": [0.0] * 30}, key=KEY)
    assert r.status_code == 403
    assert put(gateway, f"users/{USER}", {"features": [0.0] * 30}, key="nope").status_code == 401
    assert client.get(keys.user(USER)) == before


USER_BODY = {"features": [0.5] * 30}
REST_BODY = {"latitude": 13.7, "longitude": 100.5, "features": [0.5] * 10}


@pytest.mark.parametrize(
    ("path", "body", "field", "rule"),
    [
        (f"users/{USER}", {"features": [0.5] * 29}, "features", "too_short"),
        (f"users/{USER}", {"features": [0.5] * 31}, "features", "too_long"),
        (f"users/{USER}", {"features": [0.5] * 29 + [1e39]}, "features.29", "less_than_equal"),
        (f"users/{USER}", {"features": [0.5] * 29 + ["1"]}, "features.29", "float_type"),
        (f"users/{USER}", b'{"features": [NaN' + b", 0.5" * 29 + b"]}", "features.0", "finite_number"),
        (f"users/{USER}", {**USER_BODY, "extra": 1}, "extra", "extra_forbidden"),
        (f"users/{USER}", {}, "features", "missing"),
        (f"users/{USER}", b"{", "body", "json_invalid"),
        ("users/x7", USER_BODY, "user_id", "string_pattern_mismatch"),
        (f"restaurants/{RESTAURANT}", {**REST_BODY, "latitude": 95.0}, "latitude", "less_than_equal"),
        (f"restaurants/{RESTAURANT}", {**REST_BODY, "longitude": -181}, "longitude", "greater_than_equal"),
        (f"restaurants/{RESTAURANT}", {**REST_BODY, "features": [0.5] * 30}, "features", "too_long"),
        ("restaurants/-1", REST_BODY, "restaurant_id", "greater_than_equal"),
    ],
)
def test_bad_bodies_are_422_naming_the_field_and_write_nothing(
    gateway: str, redis_server: RedisServer, keys: FeatureKeys, path: str, body: Any, field: str, rule: str
) -> None:
    client = redis.Redis(port=redis_server.port)
    before = (client.get(keys.user(USER)), client.get(keys.restaurant(RESTAURANT)))
    r = put(gateway, path, body)
    assert r.status_code == 422, r.text
    assert (field, rule) in {(e["field"], e["rule"]) for e in r.json()["errors"]}
    assert (client.get(keys.user(USER)), client.get(keys.restaurant(RESTAURANT))) == before


def test_unknown_ids_are_404_and_create_nothing(
    gateway: str, redis_server: RedisServer, keys: FeatureKeys
) -> None:
    client = redis.Redis(port=redis_server.port)
    assert put(gateway, "users/999999999", USER_BODY).status_code == 404
    assert put(gateway, "restaurants/999999999", REST_BODY).status_code == 404
    assert not client.exists(keys.user(999999999), keys.restaurant(999999999))


def test_no_live_version_is_409(make_gateway: Callable[..., Edge], inference_url: str) -> None:
    # Another key prefix has no live pointer: the update is refused, not written into nowhere.
    with serve(make_gateway(upstreams=inference_url, feature_prefix="nolive")) as url:
        r = put(url, f"users/{USER}", USER_BODY)
        assert r.status_code == 409
        assert "no live feature version" in r.json()["detail"]


def test_admin_routes_are_documented(gateway: str) -> None:
    spec = requests.get(f"{gateway}/openapi.json", timeout=5).json()
    user = spec["paths"]["/admin/features/users/{user_id}"]["put"]
    assert {"403", "404", "409", "422"} <= set(user["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["UserFeaturesUpdate"]["properties"]["features"]["minItems"] == 30
    assert schemas["RestaurantFeaturesUpdate"]["properties"]["features"]["maxItems"] == 10


def test_an_applied_update_is_logged_with_the_stored_values_and_the_key(
    make_gateway: Callable[..., Edge],
    inference_url: str,
    redis_server: RedisServer,
    redis_server_factory: Callable[..., RedisServer],
    keys: FeatureKeys,
) -> None:
    events = redis_server_factory()
    log = redis.Redis(port=events.port)
    client = redis.Redis(port=redis_server.port)
    stored = client.get(keys.restaurant(RESTAURANT))
    assert isinstance(stored, bytes)
    current = unpack_restaurants([stored])
    body = {
        "latitude": float(current.latitude[0]),
        "longitude": float(current.longitude[0]),
        "features": current.features[0].tolist(),
    }
    in_features_redis = client.xlen(FEATURE_UPDATES_STREAM)  # earlier tests' gateways log to the shared Redis
    app = make_gateway(upstreams=inference_url, feature_prefix=PREFIX, events_redis_url=events.url)
    with serve(app) as url:
        assert put(url, f"restaurants/{RESTAURANT}", body).status_code == 200
        assert put(url, "users/999999999", {"features": [0.0] * 30}).status_code == 404  # refused: not logged
    entries = log.xrange(FEATURE_UPDATES_STREAM)
    assert len(entries) == 1, "exactly the applied update is logged"
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert list(fields) == list(FEATURE_UPDATE_FIELDS)
    assert (fields["entity"], fields["id"], fields["fv"], fields["actor"]) == (
        "restaurant", str(RESTAURANT), keys.version, "ops"
    )  # fmt: skip
    assert json.loads(fields["features"]) == current.features[0].tolist()  # the stored float32 values, exact
    assert float(fields["latitude"]) == float(current.latitude[0])
    assert client.xlen(FEATURE_UPDATES_STREAM) == in_features_redis, "the log went to the features Redis"


def test_an_update_that_cannot_be_logged_is_503_saying_it_was_applied(
    make_gateway: Callable[..., Edge],
    inference_url: str,
    redis_server: RedisServer,
    free_port: int,
    keys: FeatureKeys,
) -> None:
    stored = redis.Redis(port=redis_server.port).get(keys.user(USER))
    assert isinstance(stored, bytes)
    same = {"features": unpack_users([stored])[0].tolist()}  # the user's own values: nothing changes
    app = make_gateway(
        upstreams=inference_url, feature_prefix=PREFIX, events_redis_url=f"redis://127.0.0.1:{free_port}/0"
    )
    with serve(app) as url:
        r = put(url, f"users/{USER}", same)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert (
        f"updated in feature version {keys.version} but the update log is unavailable" in r.json()["detail"]
    )
