"""Whose request a prediction event records (issue 18.1) and how long a body may take (issue 18.6).

The gateway mints request ids and names the caller's key; the service records both in the prediction event, and
never takes a direct caller's own X-Request-ID as the event's request id.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from forkcast_contract.api import REQUEST_ID_PATTERN
from forkcast_contract.streams import NO_KEY_ID, PREDICTION_FIELDS
from forkcast_devservers.servers import RedisServer
from forkcast_inference.app import InferenceApp, create_app
from forkcast_inference.testing import ANSWER_TIMEOUT_S, call, drive, make_settings

MINTED = "AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"


def _near(app: InferenceApp) -> bytes:
    state = app.reader.state
    assert state is not None
    body = {
        "candidate_restaurant_ids": [3],
        "latitude": float(state.lat[3]),
        "longitude": float(state.lng[3]),
    }
    return json.dumps(body).encode()


def _last_event(app: InferenceApp, client: Any) -> dict[bytes, bytes]:
    assert app.events.flush() >= 1
    return dict(client.xrevrange(app.settings.events_stream, count=1)[0][1])


def test_the_event_records_the_gateways_request_id_and_key_id(
    app: InferenceApp, redis_server: RedisServer
) -> None:
    client = redis.Redis(port=redis_server.port)
    r = call(
        app, "POST", "/recommend/1", _near(app), {"x-request-id": MINTED, "x-forkcast-key-id": "client-7"}
    )
    assert r.status == 200 and r.headers["x-request-id"] == MINTED
    event = _last_event(app, client)
    assert (event[b"rid"], event[b"key_id"]) == (MINTED.encode(), b"client-7")
    assert tuple(k.decode() for k in event) == PREDICTION_FIELDS


@pytest.mark.parametrize(
    "headers",
    [
        {
            "x-request-id": "my-own-id"
        },  # a direct caller's id: before the fix it became the event's request id
        {"x-request-id": "my-own-id", "x-forkcast-key-id": "someone-else"},
        {"x-forkcast-key-id": "someone-else"},
        {},
    ],
)
def test_a_direct_call_gets_an_id_of_its_own_and_no_key(
    app: InferenceApp, redis_server: RedisServer, headers: dict[str, str]
) -> None:
    client = redis.Redis(port=redis_server.port)
    r = call(app, "POST", "/recommend/1", _near(app), headers)
    assert r.status == 200
    rid = r.headers["x-request-id"]
    assert rid != "my-own-id" and len(rid) >= 22
    assert re.fullmatch(REQUEST_ID_PATTERN, rid) is None  # never the shape the gateway verifies
    event = _last_event(app, client)
    assert (event[b"rid"].decode(), event[b"key_id"].decode()) == (rid, NO_KEY_ID)


def test_a_malformed_key_id_header_is_recorded_as_no_key(
    app: InferenceApp, redis_server: RedisServer
) -> None:
    client = redis.Redis(port=redis_server.port)
    r = call(app, "POST", "/recommend/1", _near(app), {"x-request-id": MINTED, "x-forkcast-key-id": "a b\tc"})
    assert r.status == 200
    assert _last_event(app, client)[b"key_id"] == NO_KEY_ID.encode()


def test_prediction_events_go_to_the_events_redis(
    redis_server: RedisServer, model_dir: Path, tmp_path: Path
) -> None:
    """FORKCAST_EVENTS_REDIS_URL set: the events land there, none in the features Redis (issue 18.2)."""
    with RedisServer(tmp_path / "events-redis") as events:
        app = create_app(
            make_settings(
                redis_server.url,
                model_dir,
                events_redis_url=events.url,
                redis_timeout_s=ANSWER_TIMEOUT_S,  # compares where events land, not the Redis deadline
            )
        )
        app.startup()
        features = redis.Redis(port=redis_server.port)
        features.delete(app.settings.events_stream)
        assert call(app, "POST", "/recommend/1", _near(app), {"x-request-id": MINTED}).status == 200
        assert app.events.flush() == 1
        assert redis.Redis(port=events.port).xlen(app.settings.events_stream) == 1
        assert features.exists(app.settings.events_stream) == 0


def test_a_body_that_trickles_in_is_cut_at_the_deadline(redis_server: RedisServer, model_dir: Path) -> None:
    """Before the fix the service waited for the body as long as the client dripped it (no read timeout)."""
    app = create_app(make_settings(redis_server.url, model_dir, body_timeout_s=0.2))
    app.startup()
    parts = [b'{"candidate_restaurant_ids":[1],', b'"latitude":1.0,']

    async def receive() -> dict[str, Any]:
        if parts:
            await asyncio.sleep(0.15)
            return {"type": "http.request", "body": parts.pop(0), "more_body": True}
        await asyncio.sleep(10)  # the client stalls
        return {"type": "http.request", "body": b"}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/recommend/1", "headers": []}
    r = drive(app, scope, receive)
    assert r.status == 408
    assert "not received within 0.2 s" in json.loads(r.body)["detail"]
    assert r.headers["connection"] == "close"
