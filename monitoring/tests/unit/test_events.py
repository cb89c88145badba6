"""Feedback decoding: the positional fast path and the dict path accept and refuse exactly the same records."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_monitoring.events import (
    Feedback,
    decode_feedback_batch,
    parse_feedback,
    parse_feedback_flat,
    parse_times,
)

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


def test_parse_times_equals_float_bit_for_bit() -> None:
    """The fixed-point fast path (gateway's ``f"{t:.6f}"``) and the ``float`` fallback give ``float``'s value."""
    rng = np.random.default_rng(7)
    fixed = [f"{t:.6f}".encode() for t in 1.7e9 + rng.random(20_000) * 1e8]  # 17 digits: the slow strtod path
    fixed += [b"9999999999.999999", b"0000000000.000001", b"1700000000.000000"]  # m >= 2**53; tiny; round
    mixed = [b"1700000000.5", b"1.7e9", b" 1700000000.25", b"1_700_000_000.0", b"inf", b"nan", b"-3.000000"]
    for raw in (fixed, fixed[:1], mixed, [b"1700000000"]):
        got, want = parse_times(raw), np.array([float(r) for r in raw])
        assert got.tobytes() == want.tobytes()  # bitwise: NaN included
    with pytest.raises(ValueError):
        parse_times([b"1700000000.000000", b"soon"])


def test_columnar_decode_equals_the_one_by_one_decode() -> None:
    rows = [flat(GOOD | {b"key_id": b"app-1"}) for _ in range(3)]
    rows[1][7] = b"nan"  # decodes, but as an invalid time: malformed one by one
    rows[2][1], rows[2][3], rows[2][5] = b"r2", b"-17", b"0"
    batch = decode_feedback_batch([(f"2-{i}".encode(), r) for i, r in enumerate(rows)])
    assert batch is not None
    for i, row in enumerate(rows):
        one = parse_feedback_flat(row)
        assert bool(batch.valid[i]) == (one is not None)
        if one is not None:
            columnar = Feedback(
                batch.request_ids[batch.request[i]],
                int(batch.restaurants[i]),
                bool(batch.clicked[i]),
                float(batch.times[i]),
                batch.key_ids[batch.key[i]],
            )
            assert columnar == one
