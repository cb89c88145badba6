"""The online AUC recomputed from the lake equals the streaming job's own computation on the same events.

The same stream records go (a) through monitoring's Joiner and Window, event by event in arrival order, as the
online-AUC job runs them, and (b) into served-log Delta tables, from which ``lake_online_auc`` recomputes the AUC.
The traffic exercises every rule that decides which pairs count: late clicks, repeated feedback with the other label,
another key's feedback ahead of the real one, feedback arriving before its prediction, a repeated prediction event,
feedback on a restaurant the response did not hold, tied scores, two model versions and a key above its share.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_lake.pit_auc import lake_online_auc
from forkcast_lake.pit_source import ServedLog
from forkcast_lake.pit_testing import LogWriter
from forkcast_monitoring.events import parse_feedback_flat, parse_prediction
from forkcast_monitoring.join import JoinConfig, Joiner, Pair
from forkcast_monitoring.window import Window

T0 = 1_800_000_000.0
SHARE = 0.4


def _traffic(seed: int = 3) -> LogWriter:
    rng = random.Random(seed)
    log = LogWriter()
    for i in range(700):
        ts = T0 + i * 10.0
        rid = f"req-{i}"
        key = rng.choices(["k1", "k2", "k3"], weights=[0.6, 0.25, 0.15])[0]
        model = "m1" if i % 3 else "m2"
        ids = rng.sample(range(60), 6)
        scores = {r: round(rng.random(), 2) for r in ids}  # two decimals: many tied scores
        log.prediction(rid, ts, i % 50, scores, model=model, key=key, arrival=ts + 2.0)
        if rng.random() < 0.03:  # a repeated event for the request: the job keeps the first
            log.prediction(rid, ts, i % 50, {r: 1 - s for r, s in scores.items()}, model=model, key=key,
                           arrival=ts + 3.0)  # fmt: skip
        for r, s in scores.items():
            if rng.random() < 0.2:
                continue  # nobody labelled this pair
            clicked = rng.random() < s
            fb_ts = ts + rng.uniform(0.0, 900.0)  # a third of them after the 600 s window
            if rng.random() < 0.05:  # another key's label first: refused, the pair stays open
                log.feedback(rid, r, not clicked, fb_ts - 0.5, key="intruder", arrival=fb_ts - 0.5)
            log.feedback(rid, r, clicked, fb_ts, key=key, arrival=fb_ts)
            if rng.random() < 0.1:  # the other label again: a duplicate
                log.feedback(rid, r, not clicked, fb_ts + 1, key=key, arrival=fb_ts + 1)
        if rng.random() < 0.05:
            log.feedback(rid, 999, True, ts + 1, key=key, arrival=ts + 1.5)  # not in the response
    return log


def _streaming(log: LogWriter, since: float) -> dict[str, tuple[int, int, int, float | None]]:
    """What the job computes: arrival-ordered records through Joiner, pairs into one Window per version."""
    records = [(PREDICTIONS_STREAM, e) for e in log.entries[PREDICTIONS_STREAM]]
    records += [(FEEDBACK_STREAM, e) for e in log.entries[FEEDBACK_STREAM]]
    records.sort(key=lambda r: int(r[1][0].split(b"-")[0]))  # arrival order (ms of the entry id)
    joiner = Joiner(JoinConfig())
    pairs: list[Pair] = []
    for stream, (entry_id, flat) in records:
        now = int(entry_id.split(b"-")[0]) / 1000 + 1
        if stream == PREDICTIONS_STREAM:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            pairs += joiner.add_prediction(parse_prediction(fields), entry_id, now)
        else:
            pair = joiner.add_feedback(parse_feedback_flat(flat), entry_id, now)
            if pair is not None:
                pairs.append(pair)
    counts = joiner.counts
    assert min(counts["feedback", o] for o in ("late", "duplicate", "key_mismatch", "unjoined")) > 0
    assert counts["predictions", "duplicate"] > 0
    codes: dict[str, int] = {}
    out = {}
    for version in ("m1", "m2"):
        window = Window(window_s=1e9, max_samples=1_000_000, max_key_share=SHARE)
        mine = [p for p in pairs if p.model_version == version]
        window.extend(
            [p.time for p in mine],
            [p.score for p in mine],
            [p.clicked for p in mine],
            [codes.setdefault(p.key_id, len(codes)) for p in mine],
        )
        e = window.estimate(1, 1, since=since)
        out[version] = (e.samples, e.positives, e.excluded, e.auc)
    return out


def test_lake_auc_equals_the_streaming_jobs_on_the_same_events(tmp_path: Path) -> None:
    log = _traffic()
    since = T0 + 1800.0
    expected = _streaming(log, since)
    log.commit(str(tmp_path), batches=3)
    for version, (samples, positives, excluded, auc) in expected.items():
        got = lake_online_auc(ServedLog(str(tmp_path)), version, since, T0 + 10**5, max_key_share=SHARE)
        assert (got.samples, got.positives, got.excluded) == (samples, positives, excluded), version
        assert excluded > 0  # the per-key share left pairs out: that rule is compared too
        assert auc is not None and got.auc == pytest.approx(auc, abs=1e-12), version


def test_a_window_without_labels_has_no_auc(tmp_path: Path) -> None:
    log = LogWriter()
    log.prediction("only", T0, 1, {1: 0.5, 2: 0.25})
    log.feedback("only", 1, True, T0 + 700)  # after the attribution window: not a pair
    log.commit(str(tmp_path))
    got = lake_online_auc(ServedLog(str(tmp_path)), "m1", T0 - 1, T0 + 1, max_key_share=1.0)
    assert (got.samples, got.auc) == (0, None)
