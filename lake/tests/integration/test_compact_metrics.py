"""The running job's HTTP side: /readyz is 503 until a step completed, /metrics carries the series the
LakeCompactionLagging alert and the dashboards read, and SIGTERM's stop commits the open batch (real servers)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

import redis
from deltalake import DeltaTable

from forkcast_contract import metric_names as n
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_cli import run_forever
from forkcast_lake.compact_metrics import CompactMetrics, start_server
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.storage import storage_options
from forkcast_lake.testing import produce

STREAMS = {"predictions": PREDICTIONS_STREAM, "feedback": FEEDBACK_STREAM}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_probes_metrics_and_the_commit_on_stop(redis_server_factory: Any, lake: str) -> None:
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    # A batch never closes by itself here (1 h, 1M entries): only the stop can commit it.
    settings = CompactSettings(
        environment="local",
        lake_uri=lake,
        events_redis_url=server.url,
        block_ms=50,
        batch_seconds=3600,
        batch_entries=1_000_000,
        keep_seconds=0,
    )
    metrics = CompactMetrics()
    http = start_server(metrics, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{http.server_port}"
    status, body = _get(f"{base}/readyz")
    assert (status, body.strip()) == (503, "not ready: no step completed yet")
    assert _get(f"{base}/healthz")[0] == 200

    produce(client, STREAMS, 40, time.time())
    stop = threading.Event()
    job = threading.Thread(target=run_forever, args=(Compactor(client, settings, metrics), stop, 0.1))
    job.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            text = _get(f"{base}/metrics")[1]
            buffered = _sample(text, n.LAKE_BUFFERED_ENTRIES, stream=FEEDBACK_STREAM)
            lag = _sample(text, n.LAKE_LAG_SECONDS, stream=PREDICTIONS_STREAM) or 0.0
            # The age of the oldest uncommitted entry (its stream id's time) grows while the batch stays open.
            if (buffered == 400 and lag >= 1.0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert buffered == 400, "the open feedback batch is not reported"
        assert lag >= 1.0, f"the uncommitted entries are over 1 s old, lag says {lag}"
        assert _get(f"{base}/readyz")[0] == 200
        assert _sample(text, n.LAKE_ROWS_COMMITTED_TOTAL, table="served/predictions") is None, (
            "committed early"
        )
    finally:
        stop.set()
        job.join(30)
    # The stop committed the open batches (SIGTERM does the same through run_forever) and trimmed them.
    options = storage_options(settings)
    assert DeltaTable(f"{lake}/served/feedback", storage_options=options).count() == 400
    text = _get(f"{base}/metrics")[1]
    assert _sample(text, n.LAKE_ROWS_COMMITTED_TOTAL, table="served/predictions") == 40
    assert _sample(text, n.LAKE_TRIMMED_TOTAL, stream=FEEDBACK_STREAM) == 400
    assert _sample(text, n.LAKE_COMMIT_SECONDS + "_count", table="served/feedback") == 1
    assert client.xlen(FEEDBACK_STREAM) == 0
    http.shutdown()
