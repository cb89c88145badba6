"""Attacks on the feedback loop (issue 18.1, 18.2): labels that would steer the online AUC that gates canaries.

Each attack runs against the real gateway and inference processes of the ``stack`` fixture; each asserts why it was
refused (status, the detail naming the reason, the refusal counted under its metric label) and that the feature
store, the feedback stream, the dedup markers and the online AUC are exactly as before.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Any

from forkcast_contract import metric_names as n
from forkcast_contract.api import REQUEST_ID_PATTERN

FEEDBACK_TOTAL = n.GATEWAY_FEEDBACK_TOTAL


def refused(stack: Any, key: str, rid: str, restaurant: int, reason: str, detail: str) -> None:
    """Feedback on ``rid`` from ``key`` is answered 403 with ``detail`` and counted under ``reason``."""
    counted = stack.metric(FEEDBACK_TOTAL, outcome=reason)
    r = stack.feedback(key, rid, restaurant)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == detail
    assert stack.metric(FEEDBACK_TOTAL, outcome=reason) == counted + 1


def test_forged_feedback_random_request_id(stack: Any, baseline: Any) -> None:
    """A request id of the minted shape that the gateway never issued (random nonce and tag)."""
    before = stack.snapshot()
    nonce, tag = (base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode() for _ in range(2))
    forged = f"{nonce}.{tag}"
    assert re.fullmatch(REQUEST_ID_PATTERN, forged)
    refused(stack, "mallory", forged, 3, "forged", "request_id was not issued by this gateway")
    stack.assert_untouched(before)


def test_caller_chosen_request_id_is_not_an_id(stack: Any, baseline: Any) -> None:
    """The old attack: send your own X-Request-ID with /recommend, then label that id. The gateway mints its own id
    and keeps the caller's only as X-Correlation-ID, so the chosen id is no request id at all."""
    r = stack.recommend("mallory", **{"x-request-id": "canary-label-me-0001"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] != "canary-label-me-0001"
    assert r.headers["x-correlation-id"] == "canary-label-me-0001"
    before = stack.snapshot()
    restaurant = r.json()["restaurants"][0]["id"]
    refused(
        stack, "mallory", "canary-label-me-0001", restaurant, "malformed",
        "request_id is not an id this gateway issues (send back a response's x-request-id)",
    )  # fmt: skip
    stack.assert_untouched(before)


def test_foreign_key_feedback(stack: Any, baseline: Any) -> None:
    """Mallory labels a request served to alice (say, one she saw answered by the canary): 403 foreign_key, and
    the refused attempt leaves no dedup marker, so alice's own label afterwards still counts (before issue 18 the
    first feedback won)."""
    rid, restaurants = stack.served("alice", "u00300")
    restaurant = restaurants[0]["id"]
    before = stack.snapshot()
    refused(stack, "mallory", rid, restaurant, "foreign_key", "request_id was issued to another API key")
    stack.assert_untouched(before)
    own = stack.feedback("alice", rid, restaurant, clicked=False)
    assert own.status_code == 202 and own.json()["duplicate"] is False, own.text
    # The event names the key that sent it (the online-AUC join matches it against the prediction's key).
    entry = stack.events.client().xrange("fc:events:feedback", own.json()["entry_id"], own.json()["entry_id"])
    assert entry[0][1][b"key_id"] == b"alice"


def flip_bit(rid: str, part: int, bit: int) -> str:
    """``rid`` with one bit flipped in its nonce (part 0) or its tag (part 1), re-encoded canonically."""
    pieces = rid.split(".")
    raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
    raw[bit // 8] ^= 1 << (bit % 8)
    pieces[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(pieces)


def test_guessed_ids_one_bit_off_a_minted_id(stack: Any, baseline: Any) -> None:
    """Mallory's own minted id with one bit flipped, in the nonce (another request's id, if ids were counters) and
    in the tag (a near-miss MAC): both forged. A non-canonical spelling of her own id (other trailing bits that
    decode to the same bytes) is malformed: an id has one spelling, so a replay cannot dodge the dedup marker."""
    rid, restaurants = stack.served("mallory", "u00301")
    restaurant = restaurants[0]["id"]
    before = stack.snapshot()
    for part, bit in ((0, 0), (0, 127), (1, 0), (1, 127)):
        guess = flip_bit(rid, part, bit)
        assert guess != rid
        refused(stack, "mallory", guess, restaurant, "forged", "request_id was not issued by this gateway")
    # 16 bytes in 22 base64 characters: the last character carries 4 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = rid[-1]
    respelled = rid[:-1] + alphabet[alphabet.index(last) ^ 1]
    assert base64.urlsafe_b64decode(respelled.split(".")[1] + "==") == base64.urlsafe_b64decode(
        rid.split(".")[1] + "=="
    )
    refused(
        stack, "mallory", respelled, restaurant, "malformed",
        "request_id is not an id this gateway issues (send back a response's x-request-id)",
    )  # fmt: skip
    stack.assert_untouched(before)


def test_id_of_a_refused_request_cannot_be_labelled(stack: Any, baseline: Any) -> None:
    """A 401 answer carries a request id too (minted for no key): nobody owns it."""
    r = stack.session.post(f"{stack.url}/recommend/u00001", json={}, timeout=5)
    assert r.status_code == 401
    before = stack.snapshot()
    refused(
        stack, "mallory", r.headers["x-request-id"], 1, "forged", "request_id was not issued by this gateway"
    )
    stack.assert_untouched(before)


def test_replayed_feedback_counts_once(stack: Any, baseline: Any) -> None:
    """Mallory labels her own request, then sends the same label again (and the opposite one): the first is
    written, the copies are answered duplicate and change nothing."""
    rid, restaurants = stack.served("mallory", "u00302")
    restaurant = restaurants[0]["id"]
    first = stack.feedback("mallory", rid, restaurant, clicked=True)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    before = stack.snapshot()
    duplicates = stack.metric(FEEDBACK_TOTAL, outcome="duplicate")
    for clicked in (True, True, False):
        again = stack.feedback("mallory", rid, restaurant, clicked=clicked)
        assert again.status_code == 202, again.text
        assert again.json() == {"duplicate": True, "entry_id": None}
    assert stack.metric(FEEDBACK_TOTAL, outcome="duplicate") == duplicates + 3
    stack.assert_untouched(before)


def test_feedback_flood_stops_at_the_per_key_limit(stack: Any, baseline: Any) -> None:
    """A key floods /feedback with labels on its own real request ids: past its feedback bucket every request is
    429 with Retry-After, and exactly the admitted ones reached the stream (nothing past the limit is written).
    /recommend's bucket for the same key is untouched by it (the feedback limit is its own, lower one)."""
    burst, rate = stack.feedback_burst, stack.feedback_rate_per_s
    ids = []
    while len(ids) < burst + 30:
        rid, restaurants = stack.served("flooder", f"u{len(ids) + 500:05d}")
        ids += [(rid, r["id"]) for r in restaurants]
    flood = ids[: burst + 30]
    before = stack.snapshot()
    limited = stack.metric(n.GATEWAY_RATE_LIMITED_TOTAL)
    started = time.monotonic()
    answers = [stack.feedback("flooder", rid, restaurant) for rid, restaurant in flood]
    elapsed = time.monotonic() - started
    accepted = [a for a in answers if a.status_code == 202]
    throttled = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(throttled) == len(answers), {a.status_code for a in answers}
    # The bucket: its burst, plus what refilled while the flood ran.
    assert burst <= len(accepted) <= burst + int(rate * elapsed) + 1
    assert all(int(a.headers["retry-after"]) >= 1 for a in throttled)
    assert all(a.json()["detail"] == "rate limit exceeded" for a in throttled)
    assert stack.metric(n.GATEWAY_RATE_LIMITED_TOTAL) == limited + len(throttled)
    after = stack.snapshot()
    assert after.feedback[0] == before.feedback[0] + len(accepted)
    assert len(after.markers - before.markers) == len(accepted)
    assert after.features == before.features
    assert stack.recommend("flooder").status_code == 200
