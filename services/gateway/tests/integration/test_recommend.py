"""The public contract against the real inference service: validation table, pass-through, headers, 413/408."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from forkcast_contract.api import REQUEST_ID_PATTERN
from forkcast_gateway.edge import Edge
from forkcast_gateway.testing import KEY, StandIn, serve

GOOD = {"candidate_restaurant_ids": list(range(200)), "latitude": 13.75, "longitude": 100.5}


@pytest.fixture
def gateway(make_gateway: Callable[..., Edge], inference_url: str) -> Iterator[str]:
    with serve(make_gateway(upstreams=inference_url)) as url:
        yield url


def post(url: str, user: str, body: Any, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{url}/recommend/{user}", data=data, headers={"x-api-key": KEY, **headers}, timeout=5
    )


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({**GOOD, "candidate_restaurant_ids": []}, "candidate_restaurant_ids", "too_short"),
        ({**GOOD, "candidate_restaurant_ids": list(range(2001))}, "candidate_restaurant_ids", "too_long"),
        ({**GOOD, "candidate_restaurant_ids": [1, -1]}, "candidate_restaurant_ids.1", "greater_than_equal"),
        ({**GOOD, "candidate_restaurant_ids": [2**63]}, "candidate_restaurant_ids.0", "less_than_equal"),
        ({**GOOD, "candidate_restaurant_ids": ["1"]}, "candidate_restaurant_ids.0", "int_type"),
        ({**GOOD, "latitude": 90.5}, "latitude", "less_than_equal"),
        ({**GOOD, "longitude": -180.1}, "longitude", "greater_than_equal"),
        ({**GOOD, "latitude": "13.7"}, "latitude", "float_type"),
        ({**GOOD, "size": 0}, "size", "greater_than_equal"),
        ({**GOOD, "size": 2.5}, "size", "int_type"),
        ({**GOOD, "max_dist": -1}, "max_dist", "greater_than_equal"),
        ({**GOOD, "sort_dist": 1}, "sort_dist", "bool_type"),
        ({**GOOD, "szie": 3}, "szie", "extra_forbidden"),
        ({"latitude": 1.0, "longitude": 1.0}, "candidate_restaurant_ids", "missing"),
        ([1, 2], "body", "model_type"),
    ],
)
def test_bad_bodies_are_422_naming_field_and_rule(gateway: str, body: Any, field: str, rule: str) -> None:
    r = post(gateway, "u1", body)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert {"field": field, "rule": rule} in [{"field": e["field"], "rule": e["rule"]} for e in errors], (
        errors
    )
    assert field in r.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b'{"candidate_restaurant_ids": [1], "latitude": 1e999, "longitude": 1}', "finite_number"),
        (b'{"candidate_restaurant_ids": [1], "latitude": NaN, "longitude": 1}', "finite_number"),
        (b'{"candidate_restaurant_ids": [1,', "json_invalid"),
        (b"", "json_invalid"),
        (b"\xff\xfe", "json_invalid"),
    ],
)
def test_malformed_json_and_non_finite(gateway: str, raw: bytes, rule: str) -> None:
    r = post(gateway, "u1", raw)
    assert r.status_code == 422
    assert rule in {e["rule"] for e in r.json()["errors"]}
    assert "Traceback" not in r.text


@pytest.mark.parametrize("user", ["x12", "u", "u-1", "u1234567890123456789", "%20"])
def test_bad_user_ids_are_422(gateway: str, user: str) -> None:
    r = post(gateway, user, GOOD)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "user_id"


def test_good_request_is_forwarded_with_headers(gateway: str, inference_url: str) -> None:
    direct = requests.post(f"{inference_url}/recommend/u00001", json=GOOD, timeout=5)
    r = post(gateway, "u00001", GOOD, **{"x-request-id": "trace-abc-123"})
    assert r.status_code == direct.status_code == 200
    assert r.json() == direct.json()
    # The caller's id comes back as the correlation id only; the request id is the gateway's (issue 18.1).
    assert r.headers["x-correlation-id"] == "trace-abc-123"
    assert re.fullmatch(REQUEST_ID_PATTERN, r.headers["x-request-id"])
    assert r.headers["x-model-version"] == direct.headers["x-model-version"]
    assert r.headers["x-feature-version"] == direct.headers["x-feature-version"]
    assert len(r.json()["restaurants"]) <= 20


def test_generated_request_id_and_unknown_user_404(gateway: str) -> None:
    r = post(gateway, "999999999", GOOD)
    assert r.status_code == 404
    assert re.fullmatch(REQUEST_ID_PATTERN, r.headers["x-request-id"])
    assert "x-correlation-id" not in r.headers
    assert "x-model-version" in r.headers


@pytest.mark.parametrize(
    ("integral", "plain"),
    [
        ({"size": 1.0}, {"size": 1}),
        ({"candidate_restaurant_ids": [3.0, 1e1]}, {"candidate_restaurant_ids": [3, 10]}),
    ],
)
def test_integral_floats_are_integers_as_the_schema_says(
    gateway: str, integral: dict[str, Any], plain: dict[str, Any]
) -> None:
    """JSON Schema counts 1.0 as an integer, so the published schema admits it; before the fix the server
    answered 422 int_type (schemathesis, issue 18.8). The upstream gets ints either way."""
    r, expected = post(gateway, "u00001", {**GOOD, **integral}), post(gateway, "u00001", {**GOOD, **plain})
    assert r.status_code == expected.status_code == 200, r.text
    assert r.json() == expected.json()
    bad = post(gateway, "u00001", {**GOOD, "size": 1.5, "candidate_restaurant_ids": [2.0, "3"]})
    assert bad.status_code == 422
    got = {(e["field"], e["rule"]) for e in bad.json()["errors"]}
    assert got == {("size", "int_type"), ("candidate_restaurant_ids.1", "int_type")}


def test_body_over_cap_is_413_by_length_and_by_stream(make_gateway: Callable[..., Edge]) -> None:
    upstream = StandIn()
    with serve(upstream) as up, serve(make_gateway(upstreams=up, max_body_bytes=4096)) as gw:
        big = json.dumps({**GOOD, "candidate_restaurant_ids": list(range(2000))}).encode()
        assert post(gw, "u1", big).status_code == 413
        chunked = requests.post(
            f"{gw}/recommend/u1", data=iter([big[:3000], big[3000:]]), headers={"x-api-key": KEY}, timeout=5
        )
        assert chunked.status_code == 413
        assert post(gw, "u1", {**GOOD, "size": 0}).status_code == 422
        assert upstream.hits == []  # nothing that failed validation was forwarded


def test_slow_body_is_cut_off(make_gateway: Callable[..., Edge]) -> None:
    upstream = StandIn()
    with serve(upstream) as up, serve(make_gateway(upstreams=up, body_timeout_s=0.3)) as gw:
        port = int(gw.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"POST /recommend/u1 HTTP/1.1\r\nhost: x\r\nx-api-key: " + KEY.encode() + b"\r\n"
                b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
            )
            t0 = time.monotonic()
            reply = s.recv(4096)
            # Cut at the 0.3 s deadline; a held connection makes the recv wait out the socket's 5 s. 4 s, not 2 s,
            # leaves a starved CI machine room between the two.
            assert time.monotonic() - t0 < 4
        assert reply.startswith(b"HTTP/1.1 408")
        assert upstream.hits == []


def test_unknown_route_and_docs(gateway: str) -> None:
    assert requests.get(f"{gateway}/nope", headers={"x-api-key": KEY}, timeout=5).status_code == 404
    spec = requests.get(f"{gateway}/openapi.json", timeout=5).json()
    body = spec["paths"]["/recommend/{user_id}"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["properties"]["candidate_restaurant_ids"]["maxItems"] == 2000
    assert body["properties"]["latitude"]["maximum"] == 90
    assert requests.get(f"{gateway}/docs", timeout=5).status_code == 200


def test_fast_path_and_fastapi_route_answer_alike(
    make_gateway: Callable[..., Edge], inference_url: str
) -> None:
    """The Edge serves POST /recommend/<id> itself; the documented FastAPI route (used without it) must agree."""
    plain = make_gateway(upstreams=inference_url)
    plain.recommend = None  # every request goes through FastAPI's router
    cases: list[tuple[str, Any]] = [
        ("u00001", GOOD),
        ("x12", GOOD),
        ("u1", {**GOOD, "size": 0}),
        ("u1", b'{"candidate_restaurant_ids": [1,'),
        ("999999999", GOOD),
    ]
    with serve(make_gateway(upstreams=inference_url)) as fast, serve(plain) as slow:
        for user, body in cases:
            a, b = post(fast, user, body), post(slow, user, body)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), (user, a.text, b.text)
            assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
            assert a.headers["x-request-id"] and b.headers["x-request-id"]
        assert requests.get(f"{fast}/recommend/u1", headers={"x-api-key": KEY}, timeout=5).status_code == 405
        assert post(fast, "u1/extra", GOOD).status_code == 404
        assert post(fast, "", GOOD).status_code == 404
