"""Integration: the online-AUC job against a real redis-server, fed in the producers' own encodings.

Predictions are written with the inference service's ``Event.fields`` and feedback with the gateway's
``FeedbackWriter`` (the Lua script it runs), so a change of either encoding breaks these tests.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import numpy as np
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server

from forkcast_contract import metric_names as n
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.ports import free_port
from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.feedback import FeedbackWriter
from forkcast_gateway.schemas import FeedbackEvent
from forkcast_inference.events import Event
from forkcast_inference.settings import InferenceSettings  # noqa: F401  (the producer package must import)
from forkcast_monitoring.online_auc import AucCollector, OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.testing import NOW, drain, scrape, write_predictions


def write_feedback(url: str, items: list[tuple[str, int, bool, float]]) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(url)
        writer = FeedbackWriter(client, FEEDBACK_STREAM, 100_000, 3600)
        for rid, restaurant, clicked, t in items:
            await writer.write(
                FeedbackEvent(request_id=rid, restaurant_id=restaurant, clicked=clicked, time=t)
            )
        await client.aclose()

    asyncio.run(go())


def traffic(
    rng: np.random.Generator, count: int, model: str, t0: float
) -> tuple[list[Event], list[tuple[str, int, bool, float]], float]:
    """Requests of 5 candidates; clicks drawn so that the scores carry signal. Returns the pairs' true AUC too."""
    events, feedback, scores, labels = [], [], [], []
    for i in range(count):
        ids = [int(x) for x in rng.choice(1000, size=5, replace=False)]
        s = [float(x) for x in rng.normal(size=5)]
        rid = f"{model}-{i}"
        events.append(Event(rid, t0 + i * 0.01, 7, model, "fv1", ids, s))
        for rest, score in zip(ids, s, strict=True):
            clicked = bool(rng.random() < 1 / (1 + np.exp(-2 * score)))
            feedback.append((rid, rest, clicked, t0 + i * 0.01 + 1.0))
            scores.append(score)
            labels.append(clicked)
    sc, lb = np.array(scores), np.array(labels)
    diff = sc[lb][:, None] - sc[~lb][None, :]
    return events, feedback, float((diff > 0).mean())


def test_joins_and_computes_auc_per_model_version(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    rng = np.random.default_rng(1)
    ev_a, fb_a, auc_a = traffic(rng, 300, "v1", NOW - 20)
    ev_b, fb_b, _ = traffic(rng, 5, "v2", NOW - 20)  # too few pairs: no AUC for v2
    write_feedback(
        redis_server.url, fb_a[:200]
    )  # some feedback before its prediction: it must wait, not be lost
    write_predictions(client, ev_a + ev_b)
    write_feedback(redis_server.url, fb_a[200:] + fb_b)
    job = OnlineAuc(client, settings, clock=lambda: NOW)
    job.ensure_groups()
    drain(job)
    assert job.estimates["v1"].samples == 1500
    assert abs((job.estimates["v1"].auc or 0) - auc_a) < 1e-9
    text = scrape(job)
    assert f'{n.ONLINE_AUC}{{model_version="v1"}}' in text
    assert f'{n.ONLINE_AUC}{{model_version="v2"}}' not in text  # not enough data: absent, not 0.5
    assert f'{n.ONLINE_AUC_SAMPLES}{{model_version="v2"}} 25.0' in text
    assert 'outcome="joined",stream="feedback"} 1525.0' in text
    # Everything joined was acknowledged; predictions wait (unacknowledged) until the attribution window passes.
    assert client.xpending(FEEDBACK_STREAM, settings.auc_group)["pending"] == 0
    assert client.xpending(PREDICTIONS_STREAM, settings.auc_group)["pending"] == 305


def test_bad_input_is_counted_and_skipped(redis_server: RedisServer, settings: MonitoringSettings) -> None:
    client = redis.Redis.from_url(redis_server.url)
    ok = Event("r1", NOW - 10, 7, "v1", "fv1", [1, 2], [0.5, 0.1])
    write_predictions(client, [ok, ok, Event("r9", NOW + 3600, 7, "v1", "fv1", [1], [0.2])])  # dup, future
    client.xadd(PREDICTIONS_STREAM, {"rid": "r2", "ids": "[1,2", "scores": "[]", "ts": "x", "model": "v1"})
    client.xadd(FEEDBACK_STREAM, {"rid": "r1", "restaurant": "1", "clicked": "yes", "ts": "1"})
    client.xadd(FEEDBACK_STREAM, {"rid": "r1", "restaurant": "1", "clicked": "1", "ts": str(NOW - 5)})
    client.xadd(
        FEEDBACK_STREAM, {"rid": "r1", "restaurant": "1", "clicked": "1", "ts": str(NOW - 5)}
    )  # replayed
    client.xadd(
        FEEDBACK_STREAM, {"rid": "r1", "restaurant": "2", "clicked": "0", "ts": str(NOW + 100)}
    )  # late
    client.xadd(FEEDBACK_STREAM, {"rid": "r1", "restaurant": "99", "clicked": "0", "ts": str(NOW - 5)})
    client.xadd(FEEDBACK_STREAM, {"rid": "nobody", "restaurant": "1", "clicked": "0", "ts": str(NOW - 5)})
    clock = [NOW]
    job = OnlineAuc(client, settings.model_copy(update={"auc_max_skew_s": 200.0}), clock=lambda: clock[0])
    job.ensure_groups()
    drain(job)
    clock[0] = NOW + 1000  # the unknown request's feedback gives up waiting
    drain(job)
    c = job.joiner.counts
    assert c[("predictions", "duplicate")] == 1
    assert c[("predictions", "future")] == 1
    assert c[("predictions", "malformed")] == 1
    assert c[("feedback", "malformed")] == 1
    assert c[("feedback", "joined")] == 1
    assert c[("feedback", "duplicate")] == 1
    assert c[("feedback", "late")] == 1
    assert c[("feedback", "unjoined")] == 2  # restaurant 99 was not served; "nobody" was never predicted
    assert client.xpending(FEEDBACK_STREAM, settings.auc_group)["pending"] == 0


def test_restart_rereads_pending_predictions_without_double_counting(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    rng = np.random.default_rng(2)
    events, feedback, _ = traffic(rng, 100, "v1", NOW - 50)
    write_predictions(client, events)
    write_feedback(redis_server.url, feedback[:250])
    first = OnlineAuc(client, settings, clock=lambda: NOW)
    first.ensure_groups()
    drain(first)
    assert first.joiner.counts[("feedback", "joined")] == 250
    del first  # the process dies: its window is gone, its unacknowledged predictions are not
    write_feedback(redis_server.url, feedback[250:])
    second = OnlineAuc(client, settings, clock=lambda: NOW)
    second.ensure_groups()
    drain(second)
    assert second.joiner.counts[("feedback", "joined")] == 250  # the rest, once each
    assert second.joiner.counts[("feedback", "unjoined")] == 0


def test_survives_redis_losing_everything_and_serves_metrics(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    job = OnlineAuc(client, settings.model_copy(update={"auc_min_samples": 10}), clock=lambda: NOW)
    stop = threading.Event()
    worker = threading.Thread(target=job.run, args=(stop.is_set,), daemon=True)
    worker.start()
    try:
        rng = np.random.default_rng(4)
        events, feedback, _ = traffic(rng, 20, "v1", NOW - 30)
        write_predictions(client, events[:10])
        write_feedback(redis_server.url, feedback[:50])
        wait_until(  # 30 s (was 10): the job's reads on a starved CI machine
            lambda: job.joiner.counts[("feedback", "joined")] == 50, timeout_s=30.0, what="50 feedback joined"
        )
        client.flushall()  # a Redis restarted empty: streams and consumer groups are gone
        write_predictions(client, events[10:])
        write_feedback(redis_server.url, feedback[50:])
        wait_until(
            lambda: job.joiner.counts[("feedback", "joined")] == 100,
            # 30 s (was 10): the job's NOGROUP backoff (0.5, 1, 2, 4 s) plus its reads, on a starved CI machine.
            timeout_s=30.0,
            what="100 feedback joined",
        )
        registry = CollectorRegistry()
        registry.register(AucCollector(job))
        port = free_port()
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        job.compute(NOW)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        server.shutdown()
        assert f'{n.ONLINE_AUC}{{model_version="v1"}}' in body
    finally:
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()


def test_a_late_join_leaves_the_window_at_its_own_event_time(
    redis_server: RedisServer, settings: MonitoringSettings
) -> None:
    """Issue 18.10: a click joins a prediction older than pairs already in the window. Before, eviction walked the
    window in arrival order and stopped at the first pair still inside it, so the late pair stayed past its time."""
    client = redis.Redis.from_url(redis_server.url)
    fast = settings.model_copy(update={"auc_window_s": 30.0})
    write_predictions(
        client,
        [
            Event("old", NOW - 50, 7, "v1", "fv1", [1], [0.9]),
            Event("new", NOW - 10, 7, "v1", "fv1", [2], [0.2]),
        ],
    )
    job = OnlineAuc(client, fast, clock=lambda: NOW)
    job.ensure_groups()
    write_feedback(redis_server.url, [("new", 2, False, NOW - 9)])
    drain(job)
    write_feedback(redis_server.url, [("old", 1, True, NOW - 5)])  # late, but inside the 60 s attribution
    drain(job)  # computes at NOW: the window starts at NOW - 30
    assert job.joiner.counts[("feedback", "joined")] == 2
    w = job.windows["v1"]
    assert w.times[: w.size].tolist() == [NOW - 10]
    assert job.estimates["v1"].samples == 1
