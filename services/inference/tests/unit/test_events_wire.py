"""The prediction event's XADD, packed by hiredis (events.Event.xadd), is byte for byte the command redis-py packs
from the same fields: the cheaper packer changes nothing on the wire."""

from __future__ import annotations

import redis

from forkcast_contract.streams import PREDICTION_FIELDS
from forkcast_inference.events import Event


def test_xadd_is_redis_pys_command_of_the_same_fields() -> None:
    event = Event("rid.0123", 1764900000.25, 42, "model-7", "20261205T000000", [3, 1], [0.75, 1e-05], "alice")
    head = ("XADD", "fc:predictions", "MAXLEN", "~", "1000", "*")
    fields = event.fields()
    assert list(fields) == list(PREDICTION_FIELDS)
    conn = redis.Connection()
    flat = [x for kv in fields.items() for x in kv]
    expected = b"".join(conn.pack_command(*head, *flat))  # type: ignore[no-untyped-call]
    assert event.xadd(head) == expected
    # Each field name then its value, as bulk strings (the stream consumers read these names).
    assert b"$3\r\nids\r\n$5\r\n[3,1]\r\n$6\r\nscores\r\n$14\r\n[0.75,0.00001]\r\n" in expected
