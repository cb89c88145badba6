"""/readyz runs its check off the event loop, one check at a time per worker (forkcast_inference.app).

Before: ``readiness()`` ran on the loop and called Redis through the blocking client, so a stalled Redis froze the
worker for the whole call (up to FORKCAST_REDIS_TIMEOUT_S per probe, per call it makes), /healthz and every in-flight
/recommend with it; and every concurrent probe ran a check of its own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from forkcast_contract.feature_store import meta_key, pointer_key
from forkcast_devservers.servers import RedisServer
from forkcast_inference import features
from forkcast_inference.app import InferenceApp, create_app
from forkcast_inference.features import VersionState
from forkcast_inference.metrics import READY
from forkcast_inference.testing import ANSWER_TIMEOUT_S, PREFIX, make_settings

# How long the tests stall Redis (CLIENT PAUSE ALL): under the app fixture's Redis timeout (ANSWER_TIMEOUT_S, 5 s),
# so the stalled check still answers; the bound on /healthz is half of it.
PAUSE_S = 2.0


async def _get(app: InferenceApp, path: str) -> tuple[int, dict[str, Any]]:
    """``GET path`` through the ASGI app on the running loop (testing.call runs a loop of its own per request)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def _count_current(app: InferenceApp) -> list[float]:
    """Wrap the reader's ``current`` (the check's Redis calls): the returned list gets a time per call."""
    calls: list[float] = []
    current: Callable[[], VersionState] = app.reader.current

    def counted() -> VersionState:
        calls.append(time.monotonic())
        return current()

    app.reader.current = counted  # type: ignore[method-assign]
    return calls


def test_healthz_is_answered_while_readyz_waits_on_a_stalled_redis(
    app: InferenceApp, redis_server: RedisServer
) -> None:
    calls = _count_current(app)

    async def run() -> tuple[float, bool, tuple[int, dict[str, Any]]]:
        began = time.monotonic()
        readyz = asyncio.ensure_future(_get(app, "/readyz"))
        await asyncio.sleep(0.05)  # the check has started (on the loop before the fix, blocking this sleep)
        status, body = await _get(app, "/healthz")
        healthz_s = time.monotonic() - began
        assert (status, body) == (200, {"status": "ok"})
        stalled = not readyz.done()
        return healthz_s, stalled, await readyz

    redis.Redis(port=redis_server.port).client_pause(int(PAUSE_S * 1000), all=True)
    healthz_s, stalled, (status, body) = asyncio.run(run())
    assert len(calls) == 1, calls  # the check did run while Redis was paused
    assert healthz_s < PAUSE_S / 2, f"/healthz took {healthz_s:.2f} s behind a /readyz stalled {PAUSE_S} s"
    assert stalled, "/readyz answered before the pause ended: the check never waited on the stalled Redis"
    # The stalled check still ends in a real answer once Redis answers again.
    assert status == 200 and body["ready"] is True, body


def test_concurrent_readyz_share_one_check_and_its_answer(
    app: InferenceApp, redis_server: RedisServer
) -> None:
    calls = _count_current(app)
    n = 8

    async def run() -> tuple[list[tuple[int, dict[str, Any]]], tuple[int, dict[str, Any]]]:
        # Redis paused: the first check is still in flight when the other probes arrive, whatever the scheduling.
        redis.Redis(port=redis_server.port).client_pause(int(PAUSE_S * 1000), all=True)
        answers = await asyncio.gather(*(_get(app, "/readyz") for _ in range(n)))
        return answers, await _get(app, "/readyz")

    answers, later = asyncio.run(run())
    assert len(calls) == 2, f"{len(calls)} checks for {n} concurrent probes and one later probe"
    version = app.reader.state.keys.version  # type: ignore[union-attr]
    want = (200, {"ready": True, "reason": f"feature version {version}"})
    assert answers == [want] * n
    # A probe after the shared check ended runs a check of its own (nothing is cached).
    # Half the pause: the first check may enter ``current`` late on a starved machine.
    assert later == want and calls[1] - calls[0] >= PAUSE_S / 2, calls


def test_a_model_loaded_on_retry_is_checked_off_the_loop(
    redis_server: RedisServer, model_dir: Path, tmp_path: Path
) -> None:
    """The retry's readiness check goes through the same single check as /readyz, and marks the replica ready."""
    late = tmp_path / "model"
    late.mkdir()
    app = create_app(
        make_settings(redis_server.url, late, redis_timeout_s=ANSWER_TIMEOUT_S, model_retry_max_s=1)
    )
    app.startup()
    assert app.model is None and app.metrics.registry.get_sample_value(READY) == 0
    calls = _count_current(app)
    for path in model_dir.iterdir():
        shutil.copy(path, late / path.name)  # the model arrives (S3 back) after the failed start
    threads: list[str] = []
    current = app.reader.current

    def on_thread() -> VersionState:
        threads.append(threading.current_thread().name)
        return current()

    app.reader.current = on_thread  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(app.retry_model(), timeout=30))
    assert threads and threading.main_thread().name not in threads, threads
    assert len(calls) == 1, calls
    assert app.ready_after_s is not None and app.metrics.registry.get_sample_value(READY) == 1


def test_a_check_that_fails_unexpectedly_answers_not_ready_with_its_cause(
    app: InferenceApp, redis_server: RedisServer
) -> None:
    """A corrupt version's metadata (an int field that is not one) raises ValueError in the reader's load: neither
    NoLiveVersionError nor a RedisError. The probe gets a 503 naming it and the gauge says not ready, where the
    check used to raise through to a 500 and leave the gauge as it was."""
    client = redis.Redis(port=redis_server.port)
    live = cast("bytes | None", client.get(pointer_key(PREFIX)))
    assert live is not None
    meta = cast("dict[Any, Any]", client.hgetall(meta_key(PREFIX, live.decode())))
    client.hset(meta_key(PREFIX, "corrupt"), mapping={**meta, b"restaurants": b"many"})
    try:
        assert asyncio.run(_get(app, "/readyz"))[0] == 200
        client.set(pointer_key(PREFIX), "corrupt")
        status, body = asyncio.run(_get(app, "/readyz"))
    finally:
        client.set(pointer_key(PREFIX), live)
        client.delete(meta_key(PREFIX, "corrupt"))
    assert status == 503 and body["ready"] is False, body
    assert body["reason"].startswith("check failed: ValueError: invalid literal for int()"), body
    assert app.metrics.registry.get_sample_value(READY) == 0


def test_a_load_that_another_load_overtook_does_not_publish_its_older_state(
    app: InferenceApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz's thread and a request on the loop may load at once: the load that began first and ended last must
    not replace the state the other published (the reader would go back to an older version)."""
    reader = app.reader
    assert isinstance(reader, features.FeatureReader)
    version = reader.current().keys.version
    read = features.load_coordinates
    overtaking: list[VersionState] = []
    calls: list[int] = []

    def overtaken(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the first load, between its start and its publication: another load runs whole
            overtaking.append(reader.load(version))
        return read(*args)

    monkeypatch.setattr(features, "load_coordinates", overtaken)
    first = reader.load(version)
    assert (
        first is not overtaking[0] and first.keys.version == version
    )  # the caller still gets what it loaded
    assert reader.state is overtaking[0], "the overtaken load replaced the state published after it began"
