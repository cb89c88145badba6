"""Attacks from inside the cluster (issue 18.6): a stolen service password against Redis, and a caller that reaches
the inference service directly (past the NetworkPolicy) and forges the gateway's headers.

The Redis instances are the stack's: the rendered production ACL files, and the services really running as those
users (so the ACL is both tight and enough for them, proved by every other test of the suite).
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
import redis
import requests

from forkcast_contract.feature_store import pointer_key
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers import resp

# (command, the name Redis gives it in the NOPERM error).
ADMIN_COMMANDS = [
    (("FLUSHALL",), "flushall"),
    (("FLUSHDB",), "flushdb"),
    (("CONFIG", "SET", "maxmemory", "0"), "config|set"),
    (("CONFIG", "SET", "appendonly", "no"), "config|set"),
    (("SHUTDOWN", "NOSAVE"), "shutdown"),
    (("KEYS", "*"), "keys"),
]


def refused(client: redis.Redis, command: tuple[str, ...]) -> str:
    with pytest.raises(redis.exceptions.NoPermissionError) as error:
        client.execute_command(*command)
    return str(error.value)


@pytest.mark.parametrize("instance", ["features", "events"])
@pytest.mark.parametrize(("command", "name"), ADMIN_COMMANDS, ids=[n for _, n in ADMIN_COMMANDS])
def test_gateway_redis_user_cannot_flush_or_reconfigure(
    stack: Any, baseline: Any, instance: str, command: tuple[str, ...], name: str
) -> None:
    """The gateway is the public edge: whoever takes it over holds its Redis password. With it, FLUSHALL, CONFIG
    SET and friends are refused by the ACL (NOPERM naming the command), and nothing changed."""
    before = stack.snapshot()
    target = stack.features if instance == "features" else stack.events
    with target.client("gateway") as client:
        assert client.ping()
        message = refused(client, command)
    assert f"'{name}' command" in message, message
    stack.assert_untouched(before)
    assert stack.recommend("alice").status_code == 200


def test_gateway_redis_user_cannot_forge_predictions_or_move_the_live_features(
    stack: Any, baseline: Any
) -> None:
    """The gateway's password cannot write a prediction event (which feedback would then join) nor switch the live
    feature version; the inference password cannot write feedback."""
    before = stack.snapshot()
    with stack.events.client("gateway") as gw:
        assert (
            "permissions to access" in refused(gw, ("XADD", PREDICTIONS_STREAM, "*", "rid", "forged")).lower()
        )
    with stack.features.client("gateway") as gw:
        assert "permissions to access" in refused(gw, ("SET", pointer_key("fc"), "forged")).lower()
    with stack.events.client("inference") as inf:
        assert (
            "permissions to access" in refused(inf, ("XADD", FEEDBACK_STREAM, "*", "rid", "forged")).lower()
        )
    stack.assert_untouched(before)


def test_no_one_can_log_in_as_the_default_redis_user(stack: Any) -> None:
    """No credentials: the default user's digest is random at every start (it stays on for the AOF replay), so a
    connection without a user is refused even PING (NOAUTH)."""
    for target in (stack.features, stack.events):
        with pytest.raises(resp.RespError, match=r"^NOAUTH"):
            resp.command("127.0.0.1", target.server.port, "PING")


def test_direct_inference_call_with_forged_gateway_headers_cannot_reach_the_auc(
    stack: Any, baseline: Any
) -> None:
    """Past the NetworkPolicy, mallory calls inference directly with a request id of the minted shape and
    ``X-Forkcast-Key-Id: alice``. Inference trusts those headers (only the gateway is meant to reach it) and records
    the prediction under them, but the id carries no valid tag, so the gateway refuses every label on it for every
    key: the online AUC cannot be reached this way. Unknown body fields are refused 422 as at the gateway."""
    forged = ".".join(base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode() for _ in "nt")
    body = {"candidate_restaurant_ids": list(range(0, 2000, 3)), "latitude": 13.87, "longitude": 100.58,
            "max_dist": 20000}  # fmt: skip
    headers = {"x-request-id": forged, "x-forkcast-key-id": "alice"}
    extra = requests.post(
        f"{stack.inference_url}/recommend/u00001", json={**body, "debug": True}, headers=headers, timeout=5
    )
    assert extra.status_code == 422, extra.text
    assert "debug" in extra.text
    before = stack.snapshot()
    r = requests.post(f"{stack.inference_url}/recommend/u00001", json=body, headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    restaurant = r.json()["restaurants"][0]["id"]
    for key in ("alice", "mallory"):
        answer = stack.feedback(key, forged, restaurant)
        assert answer.status_code == 403, answer.text
        assert json.loads(answer.text)["detail"] == "request_id was not issued by this gateway"
    stack.assert_untouched(before, predictions_added=1)
