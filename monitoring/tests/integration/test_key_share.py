"""Issue 18.1: no API key holds more than FORKCAST_AUC_MAX_KEY_SHARE of the pairs any AUC window is computed on,
feedback joins only a prediction of its own key, and a flood cannot grow the job's memory or push out other keys.

Unit tests check the window against a plain offline recompute of the rule (monitoring_support.capped_offline); the
integration tests drive the real job through real Redis streams in the producers' encodings (inference events with
the key id the gateway passes on, the gateway's FeedbackWriter with the key that sent the feedback).
"""

from __future__ import annotations

import asyncio

import numpy as np
import redis
import redis.asyncio as aioredis

from forkcast_contract import metric_names as n
from forkcast_contract.streams import FEEDBACK_FIELDS, FEEDBACK_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.feedback import FeedbackWriter
from forkcast_gateway.schemas import FeedbackEvent
from forkcast_inference.events import Event
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.testing import NOW, brute_auc, capped_offline, drain, scrape, write_predictions
from forkcast_monitoring.window import Window, key_cap

HONEST = [f"app-{i}" for i in range(6)]


def honest_and_flood(rng: np.random.Generator, flood: int) -> list[tuple[str, float, float, bool]]:
    """(key, time, score, label): six honest keys whose clicks follow the scores, and one key sending ``flood``
    pairs labelled against the scores (what a client steering the canary's AUC down would send)."""
    pairs = []
    for i, key in enumerate(HONEST):
        for _ in range(300 + 40 * i):
            score = float(rng.random())
            pairs.append((key, float(rng.uniform(0, 100)), score, bool(rng.random() < score)))
    for _ in range(flood):
        score = float(rng.random())
        pairs.append(("attacker", float(rng.uniform(0, 100)), score, score < 0.5))
    order = rng.permutation(len(pairs))  # arrival (join) order is not time order
    return [pairs[i] for i in order]


def window_of(pairs: list[tuple[str, float, float, bool]], share: float) -> Window:
    codes: dict[str, int] = {}
    w = Window(window_s=1000.0, max_samples=100_000, max_key_share=share)
    keys, times, scores, labels = zip(*pairs, strict=True)
    w.extend(times, scores, labels, [codes.setdefault(k, len(codes)) for k in keys])
    return w


def test_kept_pairs_are_the_offline_rules_to_1e9() -> None:
    pairs = honest_and_flood(np.random.default_rng(11), flood=6000)
    w = window_of(pairs, 0.25)
    e = w.estimate(min_samples=50, min_per_class=5)
    kept = capped_offline([(k, t, s, y) for k, t, s, y in pairs], 0.25)
    scores = np.array([s for s, _ in kept])
    labels = np.array([y for _, y in kept])
    assert e.samples == len(kept) and e.excluded == len(pairs) - len(kept) > 0
    assert e.auc is not None and abs(e.auc - brute_auc(scores, labels)) < 1e-9
    # The recent window applies the same rule to its own pairs.
    recent = [p for p in pairs if p[1] >= 60.0]
    kept_recent = capped_offline(recent, 0.25)
    r = w.estimate(min_samples=50, min_per_class=5, since=60.0)
    sc, lb = np.array([s for s, _ in kept_recent]), np.array([y for _, y in kept_recent])
    assert r.samples == len(kept_recent) and r.auc is not None and abs(r.auc - brute_auc(sc, lb)) < 1e-9


def test_no_key_holds_more_than_its_share_which_bounds_a_flood() -> None:
    """The cap bounds one key's pull, it does not remove it: here a key labelling every pair against the scores
    drags the AUC of six honest keys (0.83) to 0.09 uncapped, to 0.63 at a 0.25 share, where it holds a quarter."""
    honest_only = window_of(honest_and_flood(np.random.default_rng(12), flood=0), 1.0).estimate(50, 5)
    flooded = honest_and_flood(np.random.default_rng(12), flood=20_000)
    uncapped = window_of(flooded, 1.0).estimate(50, 5)
    capped_window = window_of(flooded, 0.25)
    capped = capped_window.estimate(50, 5)
    assert honest_only.auc is not None and uncapped.auc is not None and capped.auc is not None
    assert uncapped.auc < 0.2 < 0.55 < capped.auc < honest_only.auc
    counts = np.array([sum(1 for p in flooded if p[0] == key) for key in [*HONEST, "attacker"]])
    assert counts.tolist() == [300, 340, 380, 420, 460, 500, 20_000]
    assert key_cap(counts, 0.25) == 800  # 800 <= 0.25 * (2,400 + 800): the attacker keeps exactly a quarter
    assert capped.samples == 3200 and capped.excluded == 20_000 - 800
    assert capped_window.estimate(50, 5, since=0.0).samples == 3200


def test_a_single_key_gives_no_auc_unless_the_cap_is_off() -> None:
    pairs = [("only", float(t), float(t % 7), t % 2 == 0) for t in range(500)]
    capped = window_of(pairs, 0.25).estimate(50, 5)
    assert (capped.samples, capped.auc, capped.excluded) == (0, None, 500)
    off = window_of(pairs, 1.0).estimate(50, 5)
    assert off.samples == 500 and off.auc is not None and off.excluded == 0


def test_keys_at_exactly_their_share_lose_nothing() -> None:
    assert key_cap(np.array([25, 25, 25, 25]), 0.25) is None
    assert key_cap(np.array([26, 25, 25, 25]), 0.25) == 25
    assert key_cap(np.array([100]), 0.25) == 0


def test_a_flood_sheds_its_own_oldest_pairs_and_memory_stays_fixed() -> None:
    """Issue 18.1/6: a full window sheds the oldest pairs of the keys holding the most, so a flood from one key
    pushes out its own pairs, never the other keys', and the window's arrays never grow."""
    w = Window(window_s=1e9, max_samples=1000, max_key_share=0.25)
    nbytes = sum(a.nbytes for a in (w.times, w.scores, w.labels, w.keys))
    for key in range(1, 5):
        w.extend([float(t) for t in range(100)], [0.5] * 100, [True] * 100, [key] * 100)
    for t in range(0, 50_000, 500):  # the flood, key 0, in steps of 500 pairs
        w.extend([1000.0 + t + k for k in range(500)], [0.1] * 500, [False] * 500, [0] * 500)
        assert w.size <= 1000
    counts = np.bincount(w.keys[: w.size])
    assert counts[1:].tolist() == [100, 100, 100, 100]  # every honest pair is still there
    assert w.shed == 4 * 100 + 50_000 - w.size
    assert min(w.times[: w.size][w.keys[: w.size] == 0]) > 40_000  # the flood kept only its newest
    assert sum(a.nbytes for a in (w.times, w.scores, w.labels, w.keys)) == nbytes


# --- the job, through real streams ---------------------------------------------------------------------------


def write_feedback(url: str, items: list[tuple[str, int, bool, float, str]]) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(url)
        writer = FeedbackWriter(client, FEEDBACK_STREAM, 100_000, 3600)
        for rid, restaurant, clicked, t, key in items:
            event = FeedbackEvent(request_id=rid, restaurant_id=restaurant, clicked=clicked, time=t)
            await writer.write(event, key)
        await client.aclose()

    asyncio.run(go())


def test_feedback_from_another_key_is_refused_and_counted(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    write_predictions(client, [Event("r1", NOW - 10, 7, "v1", "fv1", [1, 2], [0.9, 0.1])], ["app-1"])
    # A label from another key reaches the stream only past the gateway (which refuses it with 403 and would
    # keep its dedup marker): written straight into the stream, in the contract's field order.
    forged = dict(zip(FEEDBACK_FIELDS, ["r1", "1", "0", f"{NOW - 5:.6f}", "intruder"], strict=True))
    client.xadd(FEEDBACK_STREAM, forged)  # type: ignore[arg-type]
    write_feedback(redis_server.url, [("r1", 1, True, NOW - 4, "app-1"), ("r1", 2, False, NOW - 4, "app-1")])
    job = OnlineAuc(client, settings, clock=lambda: NOW)
    job.ensure_groups()
    drain(job)
    c = job.joiner.counts
    assert c[("feedback", "key_mismatch")] == 1
    assert (
        c[("feedback", "joined")] == 2
    )  # the owner's label of restaurant 1 still joins after the forged one
    w = job.windows["v1"]
    assert sorted(zip(w.scores[: w.size].tolist(), w.labels[: w.size].tolist(), strict=True)) == [
        (0.1, False),
        (0.9, True),
    ]
    assert 'outcome="key_mismatch",stream="feedback"} 1.0' in scrape(job)


def test_the_job_caps_each_key_and_agrees_with_an_offline_recompute(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    rng = np.random.default_rng(13)
    events, keys, feedback, offline = [], [], [], []
    owners = [*HONEST, *(["attacker"] * 30)]  # the attacker makes half the requests
    for i in range(600):
        key = owners[i % len(owners)]
        ids = [int(x) for x in rng.choice(1000, size=5, replace=False)]
        scores = [float(x) for x in rng.random(5)]
        t = NOW - 80 + i * 0.1  # inside the fixture's 60 s attribution (+30 s skew)
        events.append(Event(f"q{i}", t, 7, "v1", "fv1", ids, scores))
        keys.append(key)
        for rest, score in zip(ids, scores, strict=True):
            clicked = bool(score < 0.5) if key == "attacker" else bool(rng.random() < score)
            feedback.append((f"q{i}", rest, clicked, t + 1.0, key))
            offline.append((key, t, score, clicked))
    write_predictions(client, events, keys)
    write_feedback(redis_server.url, feedback)
    job = OnlineAuc(client, settings.model_copy(update={"auc_max_key_share": 0.25}), clock=lambda: NOW)
    job.ensure_groups()
    drain(job)
    kept = capped_offline(offline, 0.25)
    e = job.estimates["v1"]
    want = brute_auc(np.array([s for s, _ in kept]), np.array([y for _, y in kept]))
    assert e.samples == len(kept) and e.auc is not None and abs(e.auc - want) < 1e-9
    text = scrape(job)
    excluded = f'{n.ONLINE_AUC_EXCLUDED_PAIRS}{{model_version="v1",reason="key_share",window="long"}}'
    assert f"{excluded} {float(len(offline) - len(kept))}" in text
    assert "attacker" not in text and "app-1" not in text  # key ids are never label values


def test_a_flood_through_the_streams_keeps_the_window_bounded(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    events = [
        Event(f"f{i}", NOW - 50 + i * 0.01, 7, "v1", "fv1", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
        for i in range(2000)
    ]
    write_predictions(client, events, ["flood"] * len(events))
    write_feedback(
        redis_server.url, [(e.request_id, r, r % 2 == 0, e.time + 1, "flood") for e in events for r in e.ids]
    )
    job = OnlineAuc(client, settings.model_copy(update={"auc_max_samples": 1000}), clock=lambda: NOW)
    job.ensure_groups()
    drain(job)
    assert job.joiner.counts[("feedback", "joined")] == 8000
    assert job.windows["v1"].size <= 1000
    assert job.dropped["capacity"] == 8000 - job.windows["v1"].size
    assert (
        f'{n.ONLINE_AUC_DROPPED_PAIRS_TOTAL}{{reason="capacity"}} {float(job.dropped["capacity"])}'
        in scrape(job)
    )
