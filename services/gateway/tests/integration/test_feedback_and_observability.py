"""POST /feedback into the bounded Redis stream (idempotent), metrics and the JSON access log."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
import redis
import requests

from forkcast_devservers.ready import wait_until
from forkcast_gateway.edge import Edge
from forkcast_gateway.request_ids import RequestIds
from forkcast_gateway.testing import ADMIN_KEY, KEY, StandIn, serve

H = {"x-api-key": KEY}


def test_feedback_is_written_once_per_request_and_restaurant(
    make_gateway: Callable[..., Edge], redis_server: object, ids: RequestIds
) -> None:
    client = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    stream = "fc:test:feedback:once"
    rid = ids.mint("user")
    with serve(make_gateway(feedback_stream=stream)) as gw:
        event = {"request_id": rid, "restaurant_id": 7, "clicked": True, "time": 1795000000.5}
        first = requests.post(f"{gw}/feedback", json=event, headers=H, timeout=5)
        again = requests.post(f"{gw}/feedback", json={**event, "clicked": False}, headers=H, timeout=5)
        other = requests.post(f"{gw}/feedback", json={**event, "restaurant_id": 8}, headers=H, timeout=5)
        assert first.status_code == again.status_code == other.status_code == 202
        assert first.json()["duplicate"] is False and first.json()["entry_id"]
        assert again.json() == {"duplicate": True, "entry_id": None}
        entries = client.xrange(stream)
        assert len(entries) == 2
        assert entries[0][1] == {
            b"rid": rid.encode(),
            b"restaurant": b"7",
            b"clicked": b"1",
            b"ts": b"1795000000.500000",
            b"key_id": b"user",
        }
        bad = requests.post(f"{gw}/feedback", json={**event, "clicked": "yes"}, headers=H, timeout=5)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "clicked"
        assert requests.post(f"{gw}/feedback", json=event, timeout=5).status_code == 401


def test_feedback_stream_is_bounded(
    make_gateway: Callable[..., Edge], redis_server: object, ids: RequestIds
) -> None:
    client = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    stream = "fc:test:feedback:bounded"
    gateway = make_gateway(feedback_stream=stream, feedback_maxlen=10, feedback_rate_burst=1000)
    with serve(gateway) as gw, requests.Session() as s:
        for _ in range(400):
            assert s.post(f"{gw}/feedback", json={"request_id": ids.mint("user"), "restaurant_id": 1,
                          "clicked": False}, headers=H, timeout=5).status_code == 202  # fmt: skip
    # MAXLEN ~ trims whole macro nodes (100 entries by default): bounded well below what was written.
    assert client.xlen(stream) <= 110


def test_metrics_and_access_log(make_gateway: Callable[..., Edge]) -> None:
    body = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'
    sink = io.BytesIO()
    with serve(StandIn()) as up:
        gateway = make_gateway(upstreams=up, access_log=True)
        assert gateway.access is not None
        gateway.access.stream = sink
        with serve(gateway) as gw:
            first_rid = requests.post(
                f"{gw}/recommend/u123", data=body, headers={**H, "x-request-id": "log-me"}, timeout=5
            ).headers["x-request-id"]
            requests.post(f"{gw}/recommend/u123", data=b"{", headers=H, timeout=5)
            metrics = requests.get(f"{gw}/metrics", timeout=5).text

            def flushed() -> bool:
                lines = [json.loads(x) for x in sink.getvalue().splitlines()]
                return any(x.get("correlation_id") == "log-me" for x in lines) and any(
                    x.get("status") == 422 for x in lines
                )

            # Written by the flush timer, while the gateway still runs (not only at shutdown): polled up to 30 s,
            # not a fixed flush_s + 0.25 s, which a starved CI machine's late timer could outlast.
            wait_until(flushed, timeout_s=30, what="the access log lines, flushed while the gateway runs")
            lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert (
        'forkcast_gateway_requests_total{method="POST",route="/recommend/{user_id}",status_class="2xx"} 1.0'
        in metrics
    )
    assert (
        'forkcast_gateway_requests_total{method="POST",route="/recommend/{user_id}",status_class="4xx"} 1.0'
        in metrics
    )
    assert 'forkcast_gateway_upstream_duration_seconds_count{outcome="ok",upstream="stable"} 1.0' in metrics
    assert "forkcast_gateway_in_flight_requests 0.0" in metrics
    first = next(x for x in lines if x["correlation_id"] == "log-me")
    assert first["request_id"] == first_rid
    assert first["status"] == 200 and first["key_id"] == "user" and first["route"] == "/recommend/{user_id}"
    assert any(x["status"] == 422 for x in lines), lines
    assert KEY.encode() not in sink.getvalue()


@pytest.mark.parametrize(
    ("method", "path", "key"), [("POST", "/feedback", KEY), ("PUT", "/admin/features/users/u1", ADMIN_KEY)]
)
def test_a_body_that_is_not_utf8_is_the_documented_422(
    make_gateway: Callable[..., Edge], method: str, path: str, key: str
) -> None:
    """Bytes FastAPI cannot decode were a bare 400 the schema does not list (schemathesis ST103): now 422."""
    headers = {"x-api-key": key, "content-type": "application/json"}
    with serve(make_gateway()) as gw:
        r = requests.request(method, f"{gw}{path}", data=b"\xff\x16", headers=headers, timeout=5)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["rule"] == "json_invalid", r.text
