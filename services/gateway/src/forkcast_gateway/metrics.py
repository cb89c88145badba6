"""The gateway's Prometheus metrics (names from forkcast_contract.metric_names), one registry per app.

Labels are bounded: the route template (never the raw path), the status class, the upstream group name; the
endpoint of the circuit state is dropped when DNS discovery drops the endpoint.
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from forkcast_contract import metric_names as n

_Child = TypeVar("_Child")
# Requests through the gateway take ≈ 1-15 ms; the buckets resolve that range and still show a 1 s timeout.
_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Observed:
    """One label set of a :class:`LoopHistogram`: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds, self.counts, self.sum = bounds, [0] * len(bounds), 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket whose bound is >= amount ("le")
        self.sum += amount


class _Counted:
    """One label set of a :class:`LoopCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _LoopFamily(Collector, Generic[_Child]):
    """What the loop-only families share: a name, label names, one child per label set, and registration."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.children: dict[tuple[str, ...], _Child] = {}
        registry.register(self)

    @abstractmethod
    def _new_child(self) -> _Child:
        """The state of a label set seen for the first time."""

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self._new_child()
        return child


class LoopCounter(_LoopFamily[_Counted]):
    """A labelled counter incremented only on the event loop's thread, like :class:`LoopHistogram` and for the
    same reason: prometheus_client's ``Counter.inc`` (a check and a lock) cost 0.33-1.54 µs against 0.05-0.09 µs for
    an attribute add (timeit, 2-core VM under load, 2026-12-05), once per request. Written by prometheus_client's
    CounterMetricFamily (``<name>_total`` samples; ``_created`` is not written)."""

    def _new_child(self) -> _Counted:
        return _Counted()

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        yield family


class LoopHistogram(_LoopFamily[_Observed]):
    """A labelled histogram observed only on the event loop's thread (the Edge and the forwarder), scraped there too
    (the async /metrics route), so it needs no lock: a list of counts and a sum per label set.

    Why not prometheus_client's Histogram: its ``observe`` takes the sum's lock and the bucket's lock and walks the
    bounds in Python, 0.71-3.40 µs per observation against 0.25-0.9 µs here (timeit, 2-core VM under other agents'
    load, 2026-12-05), and the gateway observes two per request. What Prometheus reads is the same: the family is
    written by prometheus_client's own HistogramMetricFamily (``_bucket`` per ``le`` with ``+Inf``, ``_count``,
    ``_sum``); only the ``_created`` series of the library's Histogram is not written.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = [float(b) for b in buckets]
        if self.bounds != sorted(self.bounds):
            raise ValueError("histogram buckets must be sorted")
        if not self.bounds or self.bounds[-1] != math.inf:
            self.bounds.append(math.inf)
        # The ``le`` labels as prometheus_client writes them ("0.001", "1.0", "+Inf").
        self.le: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> _Observed:
        return _Observed(self.bounds)

    def remove(self, *values: str) -> None:
        del self.children[values]

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            cumulative, buckets = 0, []
            for le, count in zip(self.le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(values), buckets, child.sum)
        yield family


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
