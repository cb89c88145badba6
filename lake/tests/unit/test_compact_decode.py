"""Stream records → served-log rows: exact values, malformed records counted (never a row, never an exception), the
producers' encodings, and stream ids ↔ Delta txn versions."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from forkcast_contract.feature_store import restaurant_value, user_value
from forkcast_contract.feature_update_events import update_event_fields
from forkcast_contract.streams import FEATURE_UPDATE_FIELDS, FEEDBACK_STREAM, NO_KEY_ID
from forkcast_lake.served_log import (
    FEATURE_UPDATES_SCHEMA,
    FEEDBACK_SCHEMA,
    PREDICTIONS_SCHEMA,
    SERVED_TABLES,
    Decoded,
    Entry,
    ServedTable,
    decode_batch,
    decode_feature_updates,
    decode_feedback,
    decode_predictions,
)
from forkcast_lake.stream_ids import StreamId
from forkcast_lake.testing import feedback_fields, prediction_fields


def _entry(entry_id: str, fields: dict[str, str]) -> Entry:
    flat: list[bytes] = []
    for k, v in fields.items():
        flat += [k.encode(), v.encode()]
    return entry_id.encode(), flat


def test_prediction_rows_keep_the_served_values_bit_for_bit() -> None:
    scores = [0.1, 1 / 3, 5e-324, 0.9999999999999999]
    fields = prediction_fields("rid-1", 1_767_225_599.25, 42, [7, 3, 11, 2**62], scores, "k1")
    decoded = decode_predictions([_entry("1767225599250-0", fields)])
    assert decoded.malformed == 0
    row = decoded.table.to_pylist()[0]
    assert decoded.table.schema == PREDICTIONS_SCHEMA
    assert row["scores"] == scores and row["restaurant_ids"] == [7, 3, 11, 2**62]
    assert (row["rid"], row["user_id"], row["key_id"], row["stream_id"]) == (
        "rid-1",
        42,
        "k1",
        "1767225599250-0",
    )
    assert (
        row["date"] == "2025-12-31"
    )  # 23:59:59.25 UTC: the day of the entry id (XADD's arrival), not the compaction's


def test_prediction_without_key_id_is_the_direct_call_key() -> None:
    fields = prediction_fields("rid-1", 1e9, 1, [1], [0.5], "k")
    del fields["key_id"]
    assert decode_predictions([_entry("1-0", fields)]).table.column("key_id").to_pylist() == [NO_KEY_ID]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ids": "[1,2]", "scores": "[0.5]"}, "ids and scores of different lengths"),
        ({"ids": "[]", "scores": "[]"}, "nothing served"),
        ({"scores": "[NaN]"}, "a non-finite score"),
        ({"ts": "-1"}, "a negative time"),
        ({"user": "u1"}, "a non-integer user"),
        ({"ids": "1],[2"}, "a field that would splice the batch's JSON"),
        ({"ids": "[1.5]"}, "a non-integer restaurant id"),
        ({"ids": f"[{2**64}]"}, "an id past int64"),
        ({"rid": ""}, "an empty request id"),
    ],
)
def test_a_malformed_prediction_is_counted_and_its_neighbours_kept(change: dict[str, str], why: str) -> None:
    good = prediction_fields("good", 1e9, 1, [1], [0.5], "k")
    bad = {**prediction_fields("bad", 1e9, 1, [1], [0.5], "k"), **change}
    decoded = decode_predictions(
        [_entry("1-0", good), _entry("1-1", bad), _entry("1-2", {**good, "rid": "g2"})]
    )
    assert decoded.malformed == 1, why
    assert decoded.table.column("rid").to_pylist() == ["good", "g2"], why


def test_feedback_rows_and_malformed_feedback() -> None:
    entries = [
        _entry("5-0", feedback_fields("r1", 17, True, 1e9, "k1")),
        _entry("5-1", {**feedback_fields("r2", 18, False, 1e9, "k1"), "clicked": "yes"}),
        _entry("5-2", {k: v for k, v in feedback_fields("r3", 19, False, 1e9, "k1").items() if k != "rid"}),
        _entry("5-3", feedback_fields("r4", 20, False, 1e9, "k2")),
    ]
    decoded = decode_feedback(entries)
    assert decoded.table.schema == FEEDBACK_SCHEMA
    assert decoded.malformed == 2
    assert [(r["rid"], r["restaurant_id"], r["clicked"]) for r in decoded.table.to_pylist()] == [
        ("r1", 17, True),
        ("r4", 20, False),
    ]


def test_feature_updates_keep_the_stored_float32_values() -> None:
    features = [0.1 * i for i in range(10)]
    restaurant = update_event_fields(
        "restaurant", 9, "fv1", restaurant_value(13.7, 100.5, features), 1e9, "k1"
    )
    user = update_event_fields("user", 3, "fv1", user_value([1 / 3] * 30), 1e9, "cli:ops")
    decoded = decode_feature_updates([_entry("1-0", restaurant), _entry("1-1", user)])
    assert decoded.table.schema == FEATURE_UPDATES_SCHEMA and decoded.malformed == 0
    rows = decoded.table.to_pylist()
    np.testing.assert_array_equal(np.float32(rows[0]["features"]), np.float32(features))
    assert rows[0]["latitude"] == 13.7 and rows[0]["longitude"] == 100.5  # 1e-7-degree quantised: exact here
    assert rows[1]["latitude"] is None and rows[1]["actor"] == "cli:ops"
    assert rows[1]["features"] == [float(np.float32(1 / 3))] * 30
    bad = {**user, "features": json.dumps([1.0] * 29)}
    assert decode_feature_updates([_entry("1-2", bad)]).malformed == 1


def test_update_event_fields_follow_the_contract_order() -> None:
    fields = update_event_fields("user", 3, "fv1", user_value([0.0] * 30), 1.5, "k")
    assert tuple(fields) == FEATURE_UPDATE_FIELDS
    assert fields["ts"] == "1.500000" and fields["latitude"] == ""


def test_the_synthetic_predictions_match_the_inference_producer() -> None:
    from forkcast_inference import (
        events,
    )  # the real producer's encoding (a workspace member, always installed)

    event = events.Event("rid-1", 1e9 + 0.5, 42, "v-test", "fv-test", [3, 1], [0.25, 1 / 3], "k1")
    assert prediction_fields("rid-1", 1e9 + 0.5, 42, [3, 1], [0.25, 1 / 3], "k1") == event.fields()


@pytest.mark.parametrize("raw", ["0-0", "1767225599250-0", "1767225599250-1048575", "8796093022207-5"])
def test_stream_ids_round_trip_through_txn_versions_in_order(raw: str) -> None:
    sid = StreamId.parse(raw)
    assert StreamId.from_version(sid.to_version()) == sid and str(sid) == raw
    if sid.seq < 2**20 - 1:
        assert sid.next().to_version() > sid.to_version()


@pytest.mark.parametrize("raw", ["1-1048576", "8796093022208-0"])
def test_stream_ids_past_the_packed_range_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        StreamId.parse(raw).to_version()


def test_feedback_by_position_and_row_by_row_give_the_same_rows() -> None:
    entries = [
        _entry(f"9-{i}", feedback_fields(f"r{i}", i, i % 3 == 0, 1e9 + i / 7, f"k{i % 2}")) for i in range(50)
    ]
    by_position = decode_feedback(entries)  # the gateway's layout, every value valid: the column-wise path
    # One record off the layout sends the whole batch row by row; the other rows must come out the same.
    odd = _entry("9-99", {"ts": "1e9", **feedback_fields("odd", 1, True, 1e9, "k")})
    row_by_row = decode_feedback([*entries, odd])
    assert row_by_row.table.num_rows == 51 and row_by_row.malformed == 0
    assert row_by_row.table.slice(0, 50).equals(by_position.table)
    clicked = by_position.table.column("clicked").to_pylist()
    assert clicked == [i % 3 == 0 for i in range(50)]


# 2025-12-31 23:59:59.250 UTC on the events Redis's clock: the partition day of every row below.
ARRIVED = "1767225599250"
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it, not ValueError


@pytest.mark.parametrize("off_layout", [False, True], ids=["column-wise path", "row-by-row path"])
def test_feedback_lands_in_the_day_it_arrived_whatever_time_the_client_sent(off_layout: bool) -> None:
    # A feedback's ts comes from the client: 1e11 (the year 5138) used to make a partition of that year, and 1e17
    # made the decoder raise ArrowInvalid (a timestamp out of range), failing the batch on every re-read.
    times = [1e9, 1e11, 1e17]
    entries = [
        _entry(f"{ARRIVED}-{i}", feedback_fields(f"r{i}", i, True, ts, "k")) for i, ts in enumerate(times)
    ]
    if off_layout:  # one record with its fields in another order sends the batch row by row
        entries.append(_entry(f"{ARRIVED}-9", {"ts": "1e17", **feedback_fields("odd", 9, True, 1e17, "k")}))
    decoded = decode_feedback(entries)
    assert decoded.malformed == 0
    assert set(decoded.table.column("date").to_pylist()) == {"2025-12-31"}
    assert decoded.table.column("ts").to_pylist()[:3] == times  # the client's time is kept as a column


def test_predictions_and_updates_are_partitioned_by_arrival_too() -> None:
    prediction = prediction_fields("rid-1", 1e11, 1, [1], [0.5], "k")
    assert decode_predictions([_entry(f"{ARRIVED}-0", prediction)]).table.column("date").to_pylist() == [
        "2025-12-31"
    ]
    update = update_event_fields("user", 3, "fv1", user_value([0.5] * 30), 1e11, "k")
    assert decode_feature_updates([_entry(f"{ARRIVED}-1", update)]).table.column("date").to_pylist() == [
        "2025-12-31"
    ]


def test_json_nested_too_deep_is_malformed_and_its_neighbours_kept() -> None:
    good = [_entry(f"7-{i}", prediction_fields(f"r{i}", 1e9, i, [i], [0.5], "k")) for i in range(3)]
    deep = _entry("7-9", {**prediction_fields("deep", 1e9, 9, [1], [0.5], "k"), "ids": DEEP})
    decoded = decode_predictions([*good, deep])
    assert decoded.malformed == 1
    assert decoded.table.column("rid").to_pylist() == ["r0", "r1", "r2"]
    update = update_event_fields("user", 3, "fv1", user_value([0.5] * 30), 1e9, "k")
    updates = decode_feature_updates([_entry("8-0", update), _entry("8-1", {**update, "features": DEEP})])
    assert (updates.table.num_rows, updates.malformed) == (1, 1)


def test_decode_batch_turns_an_unforeseen_decoder_failure_into_one_malformed_entry() -> None:
    # A decoder that raises on one entry (a failure its own checks did not foresee) fails the whole batch; the
    # compaction would re-read it from its committed position for ever. decode_batch goes on without it.
    feedback = next(t for t in SERVED_TABLES if t.stream == FEEDBACK_STREAM)

    def fragile(entries: Sequence[Entry]) -> Decoded:
        if any(entry_id == b"3-1" for entry_id, _ in entries):
            raise TypeError("unforeseen")
        return decode_feedback(entries)

    spec = ServedTable(feedback.stream, feedback.table, feedback.schema, fragile)
    entries = [_entry(f"3-{i}", feedback_fields(f"r{i}", i, False, 1e9, "k")) for i in range(3)]
    with pytest.raises(TypeError):
        spec.decode(entries)
    decoded = decode_batch(spec, entries)
    assert decoded.malformed == 1
    assert decoded.table.column("rid").to_pylist() == ["r0", "r2"]
