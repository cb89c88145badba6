"""Feedback decoding: the positional fast path and the dict path accept and refuse exactly the same records."""

from __future__ import annotations

import pytest

from forkcast_monitoring.events import Feedback, parse_feedback, parse_feedback_flat

GOOD = {b"rid": b"r1", b"restaurant": b"42", b"clicked": b"1", b"ts": b"1700000000.5"}


def flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [x for kv in fields.items() for x in kv]


@pytest.mark.parametrize(
    "change",
    [
        {},
        {b"clicked": b"0"},
        {b"clicked": b"yes"},
        {b"rid": b""},
        {b"restaurant": b"x"},
        {b"ts": b"nan"},
        {b"ts": b"-1"},
        {b"rid": b"\xff"},
    ],
)
def test_positional_and_dict_paths_agree(change: dict[bytes, bytes]) -> None:
    fields = GOOD | change
    assert parse_feedback_flat(flat(fields)) == parse_feedback(fields)


def test_another_field_order_or_extra_fields_still_decode() -> None:
    expected = Feedback("r1", 42, True, 1700000000.5)
    reordered = {k: GOOD[k] for k in (b"ts", b"clicked", b"restaurant", b"rid")}
    assert parse_feedback_flat(flat(reordered)) == expected
    assert parse_feedback_flat(flat(GOOD | {b"source": b"web"})) == expected


def test_broken_records_are_refused() -> None:
    assert parse_feedback_flat(flat(GOOD)[:-1]) is None  # odd length
    assert parse_feedback_flat(flat({b"rid": b"r1", b"clicked": b"1"})) is None  # fields missing
    assert parse_feedback_flat([]) is None
