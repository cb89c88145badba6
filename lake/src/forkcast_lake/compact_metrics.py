"""The compaction's Prometheus metrics (names from forkcast_contract.metric_names) and its HTTP probes.

One small server on ``FORKCAST_METRICS_PORT``: ``/metrics``, ``/healthz`` (200 while the process serves HTTP: the
job waits out Redis and S3 outages in its loop, so an outage is no reason to restart it) and ``/readyz`` (200 once
a loop step has completed and the last one did not fail; 503 with the error otherwise): the monitoring jobs'
probe server (forkcast_monitoring.probes), which the lake already depends on for the online-AUC pair rule.
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from forkcast_contract import metric_names as n
from forkcast_monitoring.probes import start_probe_server


class CompactMetrics:
    """The series ``forkcast-lake compact`` exports, on a registry of its own (tests build several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rows = Counter(
            n.LAKE_ROWS_COMMITTED_TOTAL, "Rows committed to a served-log table.", ["table"], registry=r
        )
        self.commit_seconds = Histogram(
            n.LAKE_COMMIT_SECONDS,
            "Seconds per Delta commit of one batch (decode, parquet write, log commit).",
            ["table"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.trimmed = Counter(
            n.LAKE_TRIMMED_TOTAL, "Stream entries trimmed after commit.", ["stream"], registry=r
        )
        self.malformed = Counter(
            n.LAKE_MALFORMED_TOTAL, "Stream entries that did not decode (no row).", ["stream"], registry=r
        )
        self.buffered = Gauge(
            n.LAKE_BUFFERED_ENTRIES, "Stream entries read but not yet committed.", ["stream"], registry=r
        )
        self.lag_seconds = Gauge(
            n.LAKE_LAG_SECONDS,
            "Age of the oldest uncommitted stream entry (0: caught up).",
            ["stream"],
            registry=r,
        )
        self.last_commit = Gauge(
            n.LAKE_LAST_COMMIT_TIMESTAMP,
            "Unix time the stream was last known committed up to its head: its last commit, or the last check that "
            "found nothing left to commit.",
            ["stream"],
            registry=r,
        )
        self.lost = Counter(
            n.LAKE_LOST_ENTRIES_TOTAL,
            "Stream entries deleted (the producers' MAXLEN cap) before the lake read them: never in the lake.",
            ["stream"],
            registry=r,
        )
        self.ready_error: str | None = "no step completed yet"


def start_server(metrics: CompactMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread (monitoring's probe server, the jobs' one way);
    returns the server (``server_port`` is bound)."""
    return start_probe_server(host, port, metrics.registry, lambda: metrics.ready_error)
