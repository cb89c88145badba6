"""The gateway's Prometheus metrics (names from forkcast_contract.metric_names), one registry per app.

Labels are bounded: the route template (never the raw path), the status class, the upstream group name; the
endpoint of the circuit state is dropped when DNS discovery drops the endpoint. The per-request families (requests,
duration, upstream) are forkcast_contract.loop_metrics' lock-free ones: written and scraped on the event loop only.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from forkcast_contract import metric_names as n
from forkcast_contract.loop_metrics import LoopCounter, LoopHistogram

# Requests through the gateway take ≈ 1-15 ms; the buckets resolve that range and still show a 1 s timeout.
_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry = CollectorRegistry()
        self.requests = LoopCounter(
            n.GATEWAY_REQUESTS_TOTAL, "Requests by route, method and status class.",
            ["route", "method", "status_class"], r,
        )  # fmt: skip
        self.duration = LoopHistogram(
            n.GATEWAY_REQUEST_DURATION_SECONDS, "Time from the request's arrival to the response's last byte.",
            ["route", "status_class"], _BUCKETS, r,
        )  # fmt: skip
        self.upstream = LoopHistogram(
            n.GATEWAY_UPSTREAM_DURATION_SECONDS, "Time of one forwarded call, by upstream group and outcome.",
            ["upstream", "outcome"], _BUCKETS, r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            n.GATEWAY_UPSTREAM_ERRORS_TOTAL, "Failed forwarded calls by upstream group and kind.",
            ["upstream", "kind"], registry=r,
        )  # fmt: skip
        self.retries = Counter(
            n.GATEWAY_UPSTREAM_RETRIES_TOTAL, "Calls retried on another endpoint after a connection failure.",
            registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            n.GATEWAY_IN_FLIGHT, "Forwarded requests now waiting for an upstream.", registry=r
        )
        self.overloaded = Counter(
            n.GATEWAY_OVERLOADED_TOTAL, "Requests refused 503 because the in-flight bound was reached.",
            registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(n.GATEWAY_RATE_LIMITED_TOTAL, "Requests refused 429.", registry=r)
        self.rate_limit_errors = Counter(
            n.GATEWAY_RATE_LIMIT_ERRORS_TOTAL, "Rate-limit checks that failed (Redis down); let through.",
            registry=r,
        )  # fmt: skip
        self.circuit_open = Counter(
            n.GATEWAY_CIRCUIT_OPEN_TOTAL, "Requests answered 503 at once because every circuit was open.",
            registry=r,
        )  # fmt: skip
        self.circuit_state = Gauge(
            n.GATEWAY_CIRCUIT_STATE, "Breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            n.GATEWAY_AUTH_FAILURES_TOTAL, "Refused API keys by reason.", ["reason"], registry=r
        )
        self.feedback = Counter(
            n.GATEWAY_FEEDBACK_TOTAL,
            "Feedback events by outcome: written, duplicate, or refused 403 (foreign_key, forged, malformed).",
            ["outcome"],
            registry=r,
        )

    def forget_endpoint(self, base: str) -> None:
        """Drop the circuit-state series of an endpoint DNS no longer names (pod IPs change with every rollout)."""
        self._children.pop((id(self.circuit_state), (base,)), None)
        with contextlib.suppress(KeyError):
            self.circuit_state.remove(base)

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: ``labels()`` takes a lock and builds a tuple on every call, and the
        forwarding path labels two metrics per request (label sets are bounded, see the module docstring)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
