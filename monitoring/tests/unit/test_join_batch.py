"""The join's columnar path (``decode_feedback_batch`` + ``Joiner.add_feedback_batch``) against the one-by-one path
(``parse_feedback_flat`` + ``Joiner.add_feedback``): the same outcomes, counts, acks, orphans and pairs."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_monitoring.events import Prediction, decode_feedback_batch, parse_feedback_flat
from forkcast_monitoring.join import JoinConfig, Joiner, Pair

NOW = 1_700_000_000.0
Entry = tuple[bytes, list[bytes] | None]


def _traffic(seed: int) -> tuple[list[Prediction], list[list[Entry]]]:
    """Predictions of three keys and two versions, and feedback batches that hit every outcome: joined, repeated in
    and across batches, a restaurant not served, another key, late, in the future, a bad time, not yet predicted."""
    rng = np.random.default_rng(seed)
    keys, predictions = ["app-a", "app-b", ""], []
    for r in range(60):
        ids = rng.choice(200, size=int(rng.integers(1, 40)), replace=False)
        scores = rng.integers(0, 6, len(ids)) / 4  # ties
        t = NOW - float(rng.integers(0, 120))
        version, key = f"v{r % 2}", keys[r % 3]
        predictions.append(
            Prediction(f"r{r}", t, version, dict(zip(ids.tolist(), scores.tolist(), strict=True)), key)
        )
    batches: list[list[Entry]] = []
    seq = 0
    for _ in range(4):
        batch: list[Entry] = []
        for _ in range(int(rng.integers(50, 400))):
            r = int(rng.integers(0, 75))  # r60..r74: never predicted (orphans)
            p = predictions[r] if r < 60 else None
            served = list(p.scores) if p is not None else [1]
            restaurant = int(rng.choice(served)) if rng.random() < 0.85 else 500  # 500: never served
            key = (p.key_id if p is not None else "app-a") if rng.random() < 0.9 else "app-z"
            base = p.time if p is not None else NOW
            lag = float(rng.choice([1.0, 5.0, 61.0]))  # 61 s: past the 60 s attribution window
            ts = f"{base + lag:.6f}".encode()
            ts = ts if rng.random() < 0.95 else rng.choice([b"nan", b"-1.000000", f"{NOW + 99:.6f}".encode()])
            clicked = b"1" if rng.random() < 0.3 else b"0"
            fields = [b"rid", f"r{r}".encode(), b"restaurant", str(restaurant).encode(), b"clicked", clicked]
            fields += [b"ts", ts, b"key_id", key.encode()]
            batch.append((f"2-{seq}".encode(), fields))
            seq += 1
        batches.append(batch)
    return predictions, batches


def _run(
    predictions: list[Prediction], batches: list[list[Entry]], columnar: bool
) -> tuple[Joiner, list[object]]:
    joiner = Joiner(JoinConfig(attribution_s=60.0, max_skew_s=30.0))
    out: list[object] = []
    for i, p in enumerate(
        predictions[:30]
    ):  # half the predictions before any feedback, half after the first batch
        out += joiner.add_prediction(p, f"1-{i}".encode(), NOW)
    for b, batch in enumerate(batches):
        if columnar:
            decoded = decode_feedback_batch(batch)
            assert decoded is not None
            joined = joiner.add_feedback_batch(decoded, NOW)
            out += [
                Pair(joined.versions[o], t, s, c, joined.key_ids[o])
                for o, t, s, c in zip(
                    joined.pending.tolist(),
                    joined.times.tolist(),
                    joined.scores.tolist(),
                    joined.clicked.tolist(),
                    strict=True,
                )
            ]
        else:
            for entry_id, fields in batch:
                assert fields is not None
                pair = joiner.add_feedback(parse_feedback_flat(fields), entry_id, NOW)
                if pair is not None:
                    out.append(pair)
        if b == 0:
            for i, p in enumerate(predictions[30:60], 30):  # their orphans join one by one, on both paths
                out += joiner.add_prediction(p, f"1-{i}".encode(), NOW)
    return joiner, out


@pytest.mark.parametrize("seed", range(6))
def test_columnar_join_equals_one_by_one(seed: int) -> None:
    predictions, batches = _traffic(seed)
    one, pairs_one = _run(predictions, batches, columnar=False)
    col, pairs_col = _run(predictions, batches, columnar=True)
    assert pairs_col == pairs_one  # the same pairs, in the same order
    assert col.counts == one.counts
    for outcome in ("joined", "duplicate", "unjoined", "key_mismatch", "late", "future", "malformed"):
        assert one.counts[("feedback", outcome)] > 0, f"the traffic never produced {outcome!r}"
    acks_one, acks_col = one.take_acks(), col.take_acks()
    assert {k: sorted(v) for k, v in acks_col.items()} == {k: sorted(v) for k, v in acks_one.items()}
    assert col.orphans == one.orphans and col.orphan_count == one.orphan_count
    assert {r: p.joined for r, p in col.pending.items()} == {r: p.joined for r, p in one.pending.items()}


def test_a_read_the_columnar_decoder_does_not_take_is_left_to_the_one_by_one_path() -> None:
    good: list[bytes] = [
        b"rid",
        b"r1",
        b"restaurant",
        b"3",
        b"clicked",
        b"1",
        b"ts",
        b"1700000001.5",
        b"key_id",
        b"k",
    ]
    assert decode_feedback_batch([(b"2-0", good)]) is not None
    odd = {
        "trimmed": None,
        "no key_id": good[:8],
        "fields reordered": [*good[2:4], *good[:2], *good[4:]],
        "clicked yes": [*good[:5], b"yes", *good[6:]],
        "clicked empty": [*good[:5], b"", *good[6:]],
        "empty rid": [*good[:1], b"", *good[2:]],
        "rid not UTF-8": [*good[:1], b"\xff", *good[2:]],
        "restaurant past int64": [*good[:3], b"9223372036854775808", *good[4:]],
        "restaurant not a number": [*good[:3], b"x", *good[4:]],
        "ts not a number": [*good[:7], b"soon", *good[8:]],
    }
    for why, fields in odd.items():
        assert decode_feedback_batch([(b"2-0", good), (b"2-1", fields)]) is None, why


def test_feedback_on_a_prediction_that_served_nothing_is_unjoined_on_both_paths() -> None:
    fields = [
        b"rid",
        b"r0",
        b"restaurant",
        b"3",
        b"clicked",
        b"1",
        b"ts",
        b"1700000001.500000",
        b"key_id",
        b"",
    ]
    joiners = []
    for columnar in (False, True):
        joiner = Joiner(JoinConfig())
        joiner.add_prediction(Prediction("r0", NOW, "v1", {}), b"1-0", NOW)
        if columnar:
            decoded = decode_feedback_batch([(b"2-0", fields)])
            assert decoded is not None
            assert len(joiner.add_feedback_batch(decoded, NOW).pending) == 0
        else:
            assert joiner.add_feedback(parse_feedback_flat(fields), b"2-0", NOW) is None
        joiners.append(joiner)
    assert joiners[0].counts == joiners[1].counts
    assert joiners[1].counts[("feedback", "unjoined")] == 1
    assert joiners[1].take_acks()["feedback"] == [b"2-0"]
