"""Decoding of the two stream records the online-AUC job joins: prediction events and click feedback.

The encodings are the producers' (inference ``events.Event.fields``: rid, ts, user, model, fv, ids, scores as
JSON arrays, key_id; gateway ``feedback``: rid, restaurant, clicked, ts, key_id). ``key_id`` is the API key the
gateway authenticated (it passes it to inference in ``X-Forkcast-Key-Id``): feedback joins a prediction only when
both carry the same one, and the AUC window caps each key's share. A record without it decodes with key id ``""``
(a producer that does not record keys), which matches only records without one. A record that does not decode is
``None`` and is counted as malformed by the caller, never an exception: one bad producer must not crash-loop the
job.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from forkcast_contract.streams import FEEDBACK_FIELDS, NO_KEY_ID

_NO_KEY = NO_KEY_ID.encode()


@dataclass(frozen=True, slots=True)
class Prediction:
    request_id: str
    time: float
    model_version: str
    scores: dict[int, float]  # restaurant id -> score, as served
    key_id: str = NO_KEY_ID  # the API key id the request came with


class Feedback(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: one is built per feedback entry (10 per prediction), and a
    # frozen dataclass' __init__ (object.__setattr__ per field) cost 0.39 µs against 0.17 µs (timeit, 1e6 builds).
    request_id: str
    restaurant_id: int
    clicked: bool
    time: float
    key_id: str = NO_KEY_ID  # the API key id that sent the feedback


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _text(fields: dict[bytes, bytes], key: bytes) -> str:
    return fields[key].decode()


def _time(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"bad time {raw!r}")
    return value


def parse_prediction(fields: dict[bytes, bytes]) -> Prediction | None:
    try:
        ids = json.loads(fields[b"ids"])
        scores = json.loads(fields[b"scores"])
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores) or not ids:
            return None
        # The conversions by C-level ``map`` (the same ``int``/``float`` calls a comprehension made, 2x cheaper).
        table = dict(zip(map(int, ids), map(float, scores), strict=True))
        if len(table) != len(ids) or not all(map(math.isfinite, table.values())):
            return None
        if min(table) < _INT64_MIN or max(table) > _INT64_MAX:  # the join keeps ids in an int64 array
            return None
        rid, model = _text(fields, b"rid"), _text(fields, b"model")
        if not rid or not model:
            return None
        key = fields.get(b"key_id", _NO_KEY).decode()
        # Interned: every pending prediction of a version (and of a key) then shares one string.
        return Prediction(rid, _time(_text(fields, b"ts")), sys.intern(model), table, sys.intern(key))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None


def parse_feedback(fields: dict[bytes, bytes]) -> Feedback | None:
    try:
        rid, restaurant, clicked, ts = (
            fields[b"rid"],
            fields[b"restaurant"],
            fields[b"clicked"],
            fields[b"ts"],
        )
    except KeyError:
        return None
    return _feedback(rid, restaurant, clicked, ts, fields.get(b"key_id", _NO_KEY))


# The field order the gateway's XADD writes (and the simulator's): a record laid out so is decoded by position.
_FEEDBACK_KEYS = tuple(name.encode() for name in FEEDBACK_FIELDS)
assert _FEEDBACK_KEYS == (b"rid", b"restaurant", b"clicked", b"ts", b"key_id"), (
    "parse_feedback_flat reads these"
)


def parse_feedback_flat(values: list[bytes]) -> Feedback | None:
    """A feedback record as the stream reply holds it, ``[k1, v1, k2, v2, …]``, without building a dict.

    Why: building the dict per entry (redis-py's pairs_to_dict, then four lookups) was the largest single cost
    of the online-AUC job after parsing itself (profile: 0.39 s of 4.6 s for 20,000 predictions); the gateway
    always writes the same five fields in the same order, so a record laid out that way is read by position.
    Any other layout takes the dict path, so an unusual producer is still decoded (or refused) the same way.
    """
    if len(values) == 10 and (values[0], values[2], values[4], values[6], values[8]) == _FEEDBACK_KEYS:
        return _feedback(values[1], values[3], values[5], values[7], values[9])
    fields = as_fields(values)
    return None if fields is None else parse_feedback(fields)


def as_fields(values: list[bytes]) -> dict[bytes, bytes] | None:
    """``[k1, v1, k2, v2, …]`` (a stream entry as the raw reply holds it) as a dict; None for an odd count."""
    return None if len(values) % 2 else dict(zip(values[::2], values[1::2], strict=True))


def _feedback(
    rid_raw: bytes, restaurant_raw: bytes, clicked: bytes, ts_raw: bytes, key_raw: bytes
) -> Feedback | None:
    # Hot path (10 calls per prediction): ``clicked`` compared as bytes (only the ASCII bytes b"0"/b"1" decode to
    # "0"/"1", so the same records are refused).
    try:
        if clicked != b"1" and clicked != b"0":
            return None
        rid = rid_raw.decode()
        if not rid:
            return None
        restaurant = int(restaurant_raw)
        ts = float(ts_raw.decode())
        if not math.isfinite(ts) or ts <= 0:
            return None
        return Feedback(rid, restaurant, clicked == b"1", ts, sys.intern(key_raw.decode()))
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
        return None


class FeedbackBatch(NamedTuple):
    """A read's feedback entries as columns, for the join's vectorised path (``Joiner.add_feedback_batch``).

    Request ids and key ids are decoded once per distinct value: entry i has request ``request_ids[request[i]]``
    and key ``key_ids[key[i]]``. ``valid`` is False where the entry decodes to None one by one (a time that is not
    finite or not positive): the join counts those malformed, as it counts ``parse_feedback_flat``'s None.
    """

    entry_ids: list[bytes]
    request_ids: list[str]
    request: npt.NDArray[np.intp]
    restaurants: npt.NDArray[np.int64]
    clicked: npt.NDArray[np.bool_]
    times: npt.NDArray[np.float64]
    key_ids: list[str]
    key: npt.NDArray[np.intp]
    valid: npt.NDArray[np.bool_]


def _distinct(raw: list[bytes]) -> tuple[list[bytes], npt.NDArray[np.intp]]:
    """The distinct values of ``raw`` in first-seen order and each entry's index among them (hashing in C)."""
    index = {value: i for i, value in enumerate(dict.fromkeys(raw))}
    return list(index), np.fromiter(map(index.__getitem__, raw), dtype=np.intp, count=len(raw))


_NAMES = b"".join(_FEEDBACK_KEYS)
_NAME_LENGTHS = list(map(len, _FEEDBACK_KEYS))
_CLICK_BYTES = np.frombuffer(b"01", dtype=np.uint8)
_DIGIT_ZERO, _DOT = ord("0"), ord(".")
_EXACT_POWERS = [float(10**d) for d in range(23)]  # 10**0 .. 10**22: each exactly a float64


def parse_times(raw: list[bytes]) -> npt.NDArray[np.float64]:
    """``float`` of each of ``raw``, equal to it bit for bit; the fixed-point layout producers write is parsed in numpy.

    Why: the gateway writes times as ``f"{t:.6f}"``, 17 significant digits, past the 15 that CPython's
    correctly-rounded strtod (Python/dtoa.c) parses on its fast path: ``float`` took ≈ 1,000 ns per entry here
    (2,000 entries, timeit, 2026-12-05), against ≈ 70 ns for ``int`` of the same bytes. When every entry has the
    same length and a dot at the same place with ASCII digits around it, the digits are read as one integer m < 2**53
    and divided by 10**d (d <= 22): both operands are exact float64 values and IEEE division rounds once, so the
    quotient is the correctly rounded value of the decimal: the exact-operands fast path of W. D. Clinger, "How to
    Read Floating Point Numbers Accurately" (PLDI 1990), which D. M. Gay's strtod (dtoa.c, CPython's Python/dtoa.c;
    read in nodejs/node deps/v8/src/third_party/dtoa/dtoa.c) takes only up to DBL_DIG = 15 digits, hence
    ``float``'s slow path on 16-17 (tests/unit/test_events.py compares the two bit for bit),
    which is what ``float`` returns. Anything else goes through ``float``; ``ValueError`` for what it refuses.
    """
    n = len(raw)
    width = len(raw[0]) if n else 0
    dot = raw[0].find(b".") if n else -1
    decimals = width - dot - 1
    if dot > 0 and decimals <= 22 and width - 1 <= 16 and set(map(len, raw)) == {width}:
        chars = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(n, width)
        digits = np.delete(chars, dot, axis=1).astype(np.int64) - _DIGIT_ZERO
        if (chars[:, dot] == _DOT).all() and ((digits >= 0) & (digits <= 9)).all():
            mantissa = digits @ (10 ** np.arange(width - 2, -1, -1, dtype=np.int64))
            if (mantissa < 2**53).all():
                return mantissa.astype(np.float64) / _EXACT_POWERS[decimals]
    return np.fromiter(map(float, raw), dtype=np.float64, count=n)


def decode_feedback_batch(entries: list[tuple[bytes, list[bytes] | None]]) -> FeedbackBatch | None:
    """Every entry of a stream read decoded column by column, or None: then the caller decodes the entries one by
    one (``parse_feedback_flat``), so an unusual record is refused exactly as before.

    Why: at real answer sizes (≈ 43 feedback entries per prediction) the per-entry ``parse_feedback_flat`` and
    join were ≈ 60 % of the job's CPU (270 of 579 µs per prediction, process_time per stage, 5,000 predictions,
    2026-12-05). Here the fields are one flat list sliced per column, request and key ids are decoded once per
    distinct value, and the numbers are parsed by C-level ``map``s. The batch is taken only when each entry is one
    ``_feedback`` decodes the same way: the gateway's field layout, ``clicked`` b"0"/b"1", ids and key ids valid
    UTF-8, non-empty request ids, restaurant ids within int64 (``int`` on the bytes, as ``_feedback``) and times
    ``float`` parses from the bytes (for ASCII what it parses from the decoded text; other bytes raise here and
    take the per-entry path). Times that parse but are not finite or not positive are marked invalid.
    """
    n = len(entries)
    try:
        values = [fields for _, fields in entries]
        if not n or set(map(len, values)) != {10}:  # type: ignore[arg-type]
            return None
        flat: list[bytes] = list(chain.from_iterable(values))  # type: ignore[arg-type]
        # Field names and ``clicked`` checked with their lengths (small ints: compared by identity) and their
        # concatenation (one memcmp), not one bytes comparison per field: ≈ 5x cheaper per entry.
        names = flat[0::2]
        if list(map(len, names)) != _NAME_LENGTHS * n or b"".join(names) != _NAMES * n:
            return None
        clicked_raw = flat[5::10]
        clicked_bytes = np.frombuffer(b"".join(clicked_raw), dtype=np.uint8)
        if set(map(len, clicked_raw)) != {1} or not np.isin(clicked_bytes, _CLICK_BYTES).all():
            return None
        rid_raw, request = _distinct(flat[1::10])
        request_ids = list(map(bytes.decode, rid_raw))
        if "" in request_ids:
            return None
        key_raw, key = _distinct(flat[9::10])
        key_ids = list(map(sys.intern, map(bytes.decode, key_raw)))
        restaurants = np.fromiter(map(int, flat[3::10]), dtype=np.int64, count=n)
        times = parse_times(flat[7::10])
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        return None
    clicked = clicked_bytes == ord("1")
    valid = np.isfinite(times) & (times > 0)
    entry_ids = [entry_id for entry_id, _ in entries]
    return FeedbackBatch(entry_ids, request_ids, request, restaurants, clicked, times, key_ids, key, valid)
