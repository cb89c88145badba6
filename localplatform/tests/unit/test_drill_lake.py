"""drill_lake.job_figures reads the online-AUC job's own /metrics exactly: the lake check compares to 1e-9, so the
figure must come back bit for bit, and from the long window, not the recent one the canary analysis reads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from forkcast_local.drill_lake import AucFigures, job_figures
from forkcast_monitoring.online_auc import AucCollector, OnlineAuc
from forkcast_monitoring.window import Estimate

AUC = 0.1 + 0.2  # 0.30000000000000004: a float whose shortest repr needs all 17 digits


@pytest.fixture
def job() -> Any:
    """What AucCollector reads of a job: its estimates per version, long and recent."""
    return SimpleNamespace(
        estimates={
            "v2": Estimate(4000, 1900, AUC, 0.28, 0.32, excluded=7),
            "v1": Estimate(10, 3, None, None, None),
        },
        recent={"v2": Estimate(900, 400, 0.5, 0.4, 0.6, excluded=3)},
        recent_window_s=60.0,
        joiner=SimpleNamespace(counts={}),
        dropped={"capacity": 0},
        last_event_time=0.0,
    )


@pytest.fixture
def metrics_url(job: Any) -> Iterator[str]:
    registry = CollectorRegistry()
    registry.register(AucCollector(cast(OnlineAuc, job)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_long_window_figures_come_back_exactly(metrics_url: str) -> None:
    figures = job_figures(metrics_url, "v2")
    # excluded 7 is the long window's; the recent window's 3 must not be taken.
    assert figures == AucFigures(auc=AUC, samples=4000, positives=1900, excluded=7)
    assert figures is not None and figures.auc is not None and figures.auc.hex() == AUC.hex()


def test_a_window_without_an_auc_and_an_absent_version(metrics_url: str) -> None:
    # Too few pairs: the job exports the counts but no AUC; a version without a window exports nothing.
    assert job_figures(metrics_url, "v1") == AucFigures(auc=None, samples=10, positives=3, excluded=0)
    assert job_figures(metrics_url, "v3") is None
