"""Request ids minted by the gateway and bound to the caller's key; feedback only on one's own ids (issue 18.1),
with its own per-key quota, in the events Redis, deduplicated for the attribution window only (issue 18.2)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from forkcast_contract.api import REQUEST_ID_PATTERN
from forkcast_contract.streams import FEEDBACK_DEDUP_PREFIX, FEEDBACK_DEDUP_TTL_S
from forkcast_gateway.edge import Edge
from forkcast_gateway.request_ids import (
    RequestIdKeyError,
    RequestIds,
    Verdict,
    correlation_id,
    read_secrets,
)
from forkcast_gateway.testing import ADMIN_KEY, KEY, StandIn, serve

BODY = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'
H, ADMIN = {"x-api-key": KEY}, {"x-api-key": ADMIN_KEY}


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def test_minted_ids_verify_for_their_key_only() -> None:
    ids = RequestIds([secrets.token_bytes(32)])
    rid = ids.mint("user")
    assert re.fullmatch(REQUEST_ID_PATTERN, rid)
    assert rid != ids.mint("user")  # 128 random bits each
    assert ids.verify(rid, "user") is Verdict.OWN
    assert ids.verify(rid, "ops", ["user", "ops"]) is Verdict.FOREIGN_KEY
    assert ids.verify(rid, "ops") is Verdict.FORGED  # no other key named: cannot tell whose
    assert ids.verify(_flip(rid, 30), "user", ["ops"]) is Verdict.FORGED  # a tag byte changed
    assert ids.verify(_flip(rid, 3), "user", ["ops"]) is Verdict.FORGED  # the nonce changed under the tag
    assert RequestIds([secrets.token_bytes(32)]).verify(rid, "user") is Verdict.FORGED  # another secret
    for bad in ["rid-1", "", rid.replace(".", ""), rid + "A", rid[:-1] + "=", "gw-1a2b-c3d4e5-17"]:
        assert ids.verify(bad, "user") is Verdict.MALFORMED, bad


def test_an_old_secret_still_verifies_after_rotation(tmp_path: Path) -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    (tmp_path / "k").write_text(f"{old}\n")
    rid = RequestIds.from_file(tmp_path / "k").mint("user")
    (tmp_path / "k").write_text(f"# new first, old kept for the attribution window\n{new}\n{old}\n")
    rotated = RequestIds.from_file(tmp_path / "k")
    assert rotated.verify(rid, "user") is Verdict.OWN
    assert RequestIds([new.encode()]).verify(rotated.mint("user"), "user") is Verdict.OWN  # new one signs


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "holds no secret"), ("# only a comment\n", "holds no secret"), ("short\n", "shorter")],
)
def test_a_bad_request_id_key_file_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "k").write_text(text)
    with pytest.raises(RequestIdKeyError, match=reason):
        read_secrets(tmp_path / "k")
    with pytest.raises(RequestIdKeyError, match="No such file"):
        read_secrets(tmp_path / "missing")


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"trace-abc.123:x_Y", True),
        (b"a" * 64, True),
        (b"a" * 65, False),
        (b"two words", False),
        (b"inject\r\nset-cookie: x=1", False),
        (b"caf\xc3\xa9", False),
        (b"", False),
    ],
)
def test_correlation_ids_are_kept_only_when_safe(raw: bytes, kept: bool) -> None:
    assert (correlation_id(raw) == raw) is kept


def _recommend(gw: str, headers: dict[str, str]) -> requests.Response:
    r = requests.post(f"{gw}/recommend/u1", data=BODY, headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    return r


def _feedback(gw: str, rid: str, headers: dict[str, str], restaurant: int = 1) -> requests.Response:
    event = {"request_id": rid, "restaurant_id": restaurant, "clicked": True}
    return requests.post(f"{gw}/feedback", json=event, headers=headers, timeout=5)


def test_feedback_only_from_the_key_the_id_was_served_to(
    make_gateway: Callable[..., Edge], redis_server: Any, ids: RequestIds
) -> None:
    """Before the fix any key could label any id (a 202 for each of these refusals)."""
    client = redis.Redis.from_url(redis_server.url)
    stream = "fc:test:feedback:ownership"
    with serve(StandIn()) as up, serve(make_gateway(upstreams=up, feedback_stream=stream)) as gw:
        rid = _recommend(gw, {**H, "x-request-id": "client-chosen-1"}).headers["x-request-id"]
        assert rid != "client-chosen-1"
        stolen = _feedback(gw, rid, ADMIN)  # another key replays the user's id
        assert (stolen.status_code, stolen.json()["detail"]) == (
            403,
            "request_id was issued to another API key",
        )
        chosen = _feedback(gw, "client-chosen-1", H)  # the caller's own X-Request-ID is not an id
        assert chosen.status_code == 403 and "not an id this gateway issues" in chosen.json()["detail"]
        forged = _feedback(gw, _flip(rid, 30), H)
        assert (forged.status_code, forged.json()["detail"]) == (
            403,
            "request_id was not issued by this gateway",
        )
        assert client.xlen(stream) == 0  # nothing written by a refusal
        own = _feedback(gw, rid, H)
        assert own.status_code == 202 and own.json()["duplicate"] is False
        metrics = requests.get(f"{gw}/metrics", timeout=5).text
    (entry,) = client.xrange(stream)
    assert entry[1][b"rid"] == rid.encode() and entry[1][b"key_id"] == b"user"
    for outcome in ("foreign_key", "malformed", "forged", "written"):
        assert f'forkcast_gateway_feedback_total{{outcome="{outcome}"}} 1.0' in metrics, outcome


def test_replicas_sharing_the_key_file_accept_each_others_ids(make_gateway: Callable[..., Edge]) -> None:
    with (
        serve(StandIn()) as up,
        serve(make_gateway(upstreams=up)) as a,
        serve(make_gateway(upstreams=up)) as b,
    ):
        rid = _recommend(a, H).headers["x-request-id"]
        assert _feedback(b, rid, H).status_code == 202


def test_feedback_has_its_own_lower_quota_per_key(
    make_gateway: Callable[..., Edge], redis_server: Any, ids: RequestIds
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.delete("fc:gateway:ratelimit:feedback:user", "fc:gateway:ratelimit:user")
    limits = {"feedback_rate_per_s": 0.01, "feedback_rate_burst": 3}
    with serve(StandIn()) as up, serve(make_gateway(upstreams=up, **limits)) as gw:
        codes = [_feedback(gw, ids.mint("user"), H).status_code for _ in range(3)]
        refused = _feedback(gw, ids.mint("user"), H)
        assert codes == [202, 202, 202]
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert _recommend(gw, H).status_code == 200  # /recommend's bucket is another one
        assert _feedback(gw, ids.mint("ops"), ADMIN).status_code == 202  # another key, its own bucket


def test_dedup_markers_live_for_the_attribution_window(
    make_gateway: Callable[..., Edge], redis_server: Any, ids: RequestIds
) -> None:
    """Issue 18.2: the marker's TTL was 7 days (604,800 s); it is the attribution window plus skew now."""
    client = redis.Redis.from_url(redis_server.url)
    rid = ids.mint("user")
    with serve(make_gateway(feedback_stream="fc:test:feedback:ttl")) as gw:
        assert _feedback(gw, rid, H, restaurant=5).status_code == 202
    ttl = client.ttl(f"{FEEDBACK_DEDUP_PREFIX}{rid}:5")
    assert FEEDBACK_DEDUP_TTL_S - 5 <= ttl <= FEEDBACK_DEDUP_TTL_S == 630


def test_feedback_goes_to_the_events_redis(
    make_gateway: Callable[..., Edge],
    redis_server: Any,
    redis_server_factory: Callable[..., Any],
    ids: RequestIds,
) -> None:
    events = redis_server_factory()
    stream = "fc:test:feedback:events-redis"
    features = redis.Redis.from_url(redis_server.url)
    features.delete(stream)
    rid = ids.mint("user")
    with serve(make_gateway(feedback_stream=stream, events_redis_url=events.url)) as gw:
        assert _feedback(gw, rid, H, restaurant=9).status_code == 202
    other = redis.Redis.from_url(events.url)
    assert other.xlen(stream) == 1 and other.exists(f"{FEEDBACK_DEDUP_PREFIX}{rid}:9") == 1
    assert features.exists(stream, f"{FEEDBACK_DEDUP_PREFIX}{rid}:9") == 0
