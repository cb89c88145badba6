"""Prometheus metrics of the inference service: names from the contract's one module, low-cardinality labels only.

The per-request families (request and stage seconds, candidates, errors) and the prediction-event counters are
forkcast_contract.loop_metrics' lock-free ones: every write is on the event loop's thread (the /recommend path, the
event sink's add and its flush task) and so is the scrape (the async /metrics route). The readiness gauges and the
served-version info stay prometheus_client's: they are written at start, on /readyz and on a model (re)load, not
per request.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Info

from forkcast_contract import metric_names as n
from forkcast_contract.loop_metrics import LoopCounter, LoopHistogram

REQUEST_SECONDS: Final = n.INFERENCE_REQUEST_SECONDS
STAGE_SECONDS: Final = n.INFERENCE_STAGE_SECONDS
CANDIDATES: Final = n.INFERENCE_CANDIDATES
ERRORS: Final = n.INFERENCE_ERRORS
EVENTS_DROPPED: Final = n.INFERENCE_EVENTS_DROPPED
EVENTS_WRITTEN: Final = n.INFERENCE_EVENTS_WRITTEN
READY: Final = n.INFERENCE_READY
SERVED: Final = n.INFERENCE_SERVED
MODEL_PUBLISHED_TIME: Final = n.INFERENCE_MODEL_PUBLISHED_TIME
MODEL_OFFLINE_AUC: Final = n.INFERENCE_MODEL_OFFLINE_AUC

STAGES: Final = ("fetch", "geo", "score", "serialize")
# out_of_range also counts repeats of an id already in the request (duplicates are served once).
CANDIDATE_KINDS: Final = ("in_range", "out_of_range", "unknown")
ERROR_CAUSES: Final = (
    "bad_request",
    "unknown_user",
    "redis_unavailable",
    "no_feature_version",
    "schema_mismatch",
    "corrupt_user",
    "not_ready",
    "internal",
)
# Latency buckets for a 1-100 ms service (finer at the low end, where the targets are).
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
_STAGE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


class Metrics:
    """One registry per app (tests build several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = LoopHistogram(
            REQUEST_SECONDS, "Time to answer POST /recommend, by status class", ["status"], _BUCKETS, r
        )
        stage = LoopHistogram(
            STAGE_SECONDS, "Time per stage of a recommendation", ["stage"], _STAGE_BUCKETS, r
        )
        self.stage = {s: stage.labels(s) for s in STAGES}
        candidates = LoopCounter(CANDIDATES, "Candidates seen, by outcome", ["kind"], r)
        self.candidates = {k: candidates.labels(k) for k in CANDIDATE_KINDS}
        errors = LoopCounter(ERRORS, "Failed requests by cause", ["cause"], r)
        self.errors = {c: errors.labels(c) for c in ERROR_CAUSES}
        # Bound now so that they show 0 before the first flush, as prometheus_client's unlabelled Counter did.
        self.events_dropped = LoopCounter(
            EVENTS_DROPPED, "Prediction events not written to the stream", [], r
        ).labels()
        self.events_written = LoopCounter(
            EVENTS_WRITTEN, "Prediction events written to the stream", [], r
        ).labels()
        self.ready = Gauge(READY, "1 when /readyz is green", registry=r)
        self.served = Info(SERVED, "Model and feature versions served, with provenance", registry=r)
        # Set once the model is loaded; stays 0 for a version id without a timestamp (the max-age alert skips 0).
        self.model_published = Gauge(
            MODEL_PUBLISHED_TIME, "Unix time the served model version was published", registry=r
        )
        # Absent when the served copy carries no test AUC (a local directory without metrics.json's roc_auc).
        self.model_offline_auc = Gauge(
            MODEL_OFFLINE_AUC,
            "Test-set ROC-AUC of the served model version at training",
            ["model_version"],
            registry=r,
        )
        # Bound children: looking a label up per request costs more than the observation itself.
        self.ok = self.request_seconds.labels("2xx")
        self.client_error = self.request_seconds.labels("4xx")
        self.server_error = self.request_seconds.labels("5xx")
