"""The lock-free loop-only families write, line for line, what prometheus_client's Histogram and Counter write for
the same observations (less the ``_created`` series), so rules and dashboards read them unchanged."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from forkcast_contract.loop_metrics import LoopCounter, LoopHistogram

# The gateway's request buckets (forkcast_gateway.metrics): bounds that floats render in several ways ("0.0075").
BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [x for x in generate_latest(registry).decode().splitlines() if "_created" not in x]


def test_the_loop_histogram_writes_what_prometheus_clients_histogram_writes() -> None:
    """Same observations (bucket bounds exactly, +Inf, zero), same exposition, line for line, but ``_created``."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("x_seconds", "doc", ["route", "class"], BUCKETS, ours)
    reference = Histogram("x_seconds", "doc", ["route", "class"], buckets=BUCKETS, registry=theirs)
    for value in [0.0, 0.0005, *BUCKETS, 0.0011, 0.3, 3.0, 99.0]:
        fast.labels("/r", "2xx").observe(value)
        reference.labels("/r", "2xx").observe(value)
    fast.labels("/r", "5xx").observe(0.01)
    reference.labels("/r", "5xx").observe(0.01)
    assert generate_latest(ours).decode().splitlines() == _exposition(theirs)
    fast.remove("/r", "5xx")
    assert 'class="5xx"' not in generate_latest(ours).decode()


def test_the_loop_counter_writes_what_prometheus_clients_counter_writes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopCounter("x_requests_total", "doc", ["route", "class"], ours)
    reference = Counter("x_requests_total", "doc", ["route", "class"], registry=theirs)
    for labels in [("/r", "2xx"), ("/r", "2xx"), ("/r", "4xx")]:
        fast.labels(*labels).inc()
        reference.labels(*labels).inc()
    assert generate_latest(ours).decode().splitlines() == _exposition(theirs)


def test_an_unlabelled_loop_counter_writes_what_prometheus_clients_counter_writes() -> None:
    """A family without labels (the inference's event counters): one child, bound before its first write, shows 0
    as prometheus_client's does, then the sum of what was added."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopCounter("x_events", "doc", [], ours).labels()
    reference = Counter("x_events", "doc", registry=theirs)
    assert generate_latest(ours).decode().splitlines() == _exposition(theirs)
    assert "x_events_total 0.0" in generate_latest(ours).decode().splitlines()
    fast.inc(3)
    fast.inc()
    reference.inc(3)
    reference.inc()
    assert generate_latest(ours).decode().splitlines() == _exposition(theirs)
    assert "x_events_total 4.0" in generate_latest(ours).decode().splitlines()


def test_a_label_set_of_the_wrong_arity_or_unsorted_buckets_are_refused() -> None:
    registry = CollectorRegistry()
    family = LoopCounter("x_total", "doc", ["route"], registry)
    with pytest.raises(ValueError, match=r"x_total takes labels \['route'\], got \('a', 'b'\)"):
        family.labels("a", "b")
    with pytest.raises(ValueError, match="histogram buckets must be sorted"):
        LoopHistogram("y_seconds", "doc", [], (0.2, 0.1), registry)
