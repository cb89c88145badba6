"""/metrics after served requests: the per-request families (forkcast_contract.loop_metrics' lock-free ones) write,
line for line, what prometheus_client's Histogram and Counter would for the same observations (less ``_created``),
so the alerts, AnalysisTemplates and dashboards that read ``_bucket`` / ``_count`` / ``_sum`` / ``_total`` are
unaffected."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from forkcast_inference import metrics as names
from forkcast_inference.app import InferenceApp
from forkcast_inference.metrics import _BUCKETS, _STAGE_BUCKETS
from forkcast_inference.testing import call

FAMILIES = (
    names.REQUEST_SECONDS,
    names.STAGE_SECONDS,
    names.CANDIDATES,
    names.ERRORS,
    names.EVENTS_DROPPED,
    names.EVENTS_WRITTEN,
)


class _Tee:
    """One label set written twice: to the app's own child and to prometheus_client's of the same label set."""

    def __init__(self, ours: Any, theirs: Any) -> None:
        self.ours, self.theirs = ours, theirs

    def observe(self, amount: float) -> None:
        self.ours.observe(amount)
        self.theirs.observe(amount)

    def inc(self, amount: float = 1.0) -> None:
        self.ours.inc(amount)
        self.theirs.inc(amount)


def _reference(app: InferenceApp) -> CollectorRegistry:
    """prometheus_client's families, registered and labelled in the app's order, fed every write the app makes."""
    m, r = app.metrics, CollectorRegistry()
    seconds = Histogram(names.REQUEST_SECONDS, "Time to answer POST /recommend, by status class", ["status"],
                        buckets=_BUCKETS, registry=r)  # fmt: skip
    m.ok = _Tee(m.ok, seconds.labels("2xx"))  # type: ignore[assignment]
    m.client_error = _Tee(m.client_error, seconds.labels("4xx"))  # type: ignore[assignment]
    m.server_error = _Tee(m.server_error, seconds.labels("5xx"))  # type: ignore[assignment]
    stage = Histogram(names.STAGE_SECONDS, "Time per stage of a recommendation", ["stage"],
                      buckets=_STAGE_BUCKETS, registry=r)  # fmt: skip
    m.stage = {s: _Tee(m.stage[s], stage.labels(s)) for s in names.STAGES}  # type: ignore[misc]
    candidates = Counter(names.CANDIDATES, "Candidates seen, by outcome", ["kind"], registry=r)
    m.candidates = {k: _Tee(m.candidates[k], candidates.labels(k)) for k in names.CANDIDATE_KINDS}  # type: ignore[misc]
    errors = Counter(names.ERRORS, "Failed requests by cause", ["cause"], registry=r)
    m.errors = {c: _Tee(m.errors[c], errors.labels(c)) for c in names.ERROR_CAUSES}  # type: ignore[misc]
    dropped = Counter(names.EVENTS_DROPPED, "Prediction events not written to the stream", registry=r)
    m.events_dropped = _Tee(m.events_dropped, dropped)  # type: ignore[assignment]
    written = Counter(names.EVENTS_WRITTEN, "Prediction events written to the stream", registry=r)
    m.events_written = _Tee(m.events_written, written)  # type: ignore[assignment]
    return r


def _families(text: str) -> list[str]:
    """The lines of FAMILIES in an exposition, HELP and TYPE included, in order; ``_created`` left out."""
    kept = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("#") else line.split("{")[0].split()[0]
        if "_created" not in name and any(name == f or name.startswith(f + "_") for f in FAMILIES):
            kept.append(line)
    return kept


def test_served_requests_expose_what_prometheus_client_would(app: InferenceApp) -> None:
    reference = _reference(app)
    state = app.reader.state
    assert state is not None
    near = {"candidate_restaurant_ids": [1, 2, 3, 999_999], "latitude": float(state.lat[2]),
            "longitude": float(state.lng[2]), "max_dist": 1e6}  # fmt: skip
    assert call(app, "POST", "/recommend/1", json.dumps(near).encode()).status == 200
    assert call(app, "POST", "/recommend/2", json.dumps(near).encode()).status == 200
    assert call(app, "POST", "/recommend/u999999999", json.dumps(near).encode()).status == 404
    assert call(app, "POST", "/recommend/1", b"not json").status == 422
    assert app.events.flush() == 2
    ours = _families(call(app, "GET", "/metrics").body.decode())
    assert ours == _families(generate_latest(reference).decode())
    # And what the exposition says, in Prometheus's own words: the counts of each status class and cause.
    for line in (
        f'{names.REQUEST_SECONDS}_count{{status="2xx"}} 2.0',
        f'{names.REQUEST_SECONDS}_bucket{{le="+Inf",status="2xx"}} 2.0',
        f'{names.REQUEST_SECONDS}_count{{status="4xx"}} 2.0',
        f'{names.REQUEST_SECONDS}_count{{status="5xx"}} 0.0',
        f'{names.STAGE_SECONDS}_count{{stage="score"}} 2.0',
        f'{names.CANDIDATES}_total{{kind="in_range"}} 6.0',
        f'{names.CANDIDATES}_total{{kind="unknown"}} 2.0',
        f'{names.ERRORS}_total{{cause="unknown_user"}} 1.0',
        f'{names.ERRORS}_total{{cause="bad_request"}} 1.0',
        f"{names.EVENTS_WRITTEN}_total 2.0",
        f"{names.EVENTS_DROPPED}_total 0.0",
    ):
        assert line in ours, line
