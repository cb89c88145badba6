"""The templates' own queries, run by the engine against a real Prometheus scraping pods labelled by the rendered
PodMonitor: the error-ratio metric fails the canary hash and passes the stable one, and an unreachable Prometheus
is an Error measurement counted in a row (consecutiveErrorLimit). Stand-in pods serve fixed-rate counters."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.render import render

from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import Prometheus
from forkcast_local.rehearsal import spec as spec_mod
from forkcast_local.rehearsal.analysis import AnalysisRun
from forkcast_local.rehearsal.prometheus import PrometheusQuery
from forkcast_local.rehearsal.scrape import (
    ScrapedPod,
    file_sd_entries,
    prometheus_config,
    target_labels,
    write_targets,
)
from forkcast_local.rehearsal.spec import SpecError

ROOT = Path(__file__).resolve().parents[3]
HASH_LABEL = "rollouts-pod-template-hash"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return list(render(ROOT / "manifests" / "overlays" / "dev").docs)


class StandInPod:
    """/metrics with request counters growing at ``rate`` per second, ``errors`` of them 5xx."""

    def __init__(self, rate: float, errors: float) -> None:
        started = time.monotonic()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                n = (time.monotonic() - started) * rate
                body = (
                    f'forkcast_inference_request_seconds_count{{status="2xx"}} {n * (1 - errors):.3f}\n'
                    f'forkcast_inference_request_seconds_count{{status="5xx"}} {n * errors:.3f}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def prometheus(tmp_path: Path, docs: list[dict[str, Any]]) -> Iterator[str]:
    stable, canary = StandInPod(600, 0.0), StandInPod(600, 0.2)
    pods = [
        ScrapedPod("inference-s7b-1", "forkcast-dev", {HASH_LABEL: "s7b"}, stable.address),
        ScrapedPod("inference-c4n-1", "forkcast-dev", {HASH_LABEL: "c4n"}, canary.address),
    ]
    targets = tmp_path / "targets.json"
    write_targets(targets, file_sd_entries(docs, "inference", pods))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, job="inference", interval_s=0.5)))
    with Prometheus(tmp_path, config=config) as server:
        yield server.url
    for pod in (stable, canary):
        pod.server.shutdown()


def test_the_rendered_podmonitor_labels_a_pod_as_the_templates_select_it(docs: list[dict[str, Any]]) -> None:
    pod = ScrapedPod("inference-c4n-1", "forkcast-dev", {HASH_LABEL: "c4n", "app": "x"}, "127.0.0.1:1")
    assert target_labels(docs, "inference", pod) == {
        "rollouts_pod_template_hash": "c4n",
        "namespace": "forkcast-dev",
    }
    with pytest.raises(SpecError, match="PodMonitors named nope"):
        target_labels(docs, "nope", pod)


def _error_ratio_run(docs: list[dict[str, Any]], canary_hash: str) -> AnalysisRun:
    spec = spec_mod.load(docs)
    template = spec.templates["inference-error-ratio"]
    # Interval 1m compressed x60: a measurement a second.
    return AnalysisRun(
        "bg",
        [template],
        {"namespace": spec.namespace, "canary-hash": canary_hash},
        time.time(),
        time_scale=60,
    )


def _run_until_done(run: AnalysisRun, measure: PrometheusQuery, budget_s: float) -> None:
    end = time.time() + budget_s
    while time.time() < end and run.phase == "Running":
        run.reconcile(time.time(), measure)
        time.sleep(0.2)


def test_the_error_ratio_template_fails_the_canary_and_passes_the_stable(
    prometheus: str, docs: list[dict[str, Any]]
) -> None:
    measure = PrometheusQuery(prometheus)
    time.sleep(2.5)  # a few scrapes: rate() needs two samples of each series
    canary = _error_ratio_run(docs, "c4n")
    _run_until_done(canary, measure, 30)
    assert canary.phase == "Failed", [vars(m) for m in canary.results[0].measurements]
    assert canary.message == 'Metric "error-ratio" assessed Failed due to failed (2) > failureLimit (1)'
    measured = canary.results[0].measurements
    # Before Prometheus holds two samples of the new targets the query is empty: Inconclusive, within the limit.
    assert all(m.value == [] for m in measured if m.phase == "Inconclusive")
    assert [round((m.value or [0])[0], 3) for m in measured if m.phase == "Failed"] == [0.2, 0.2]
    stable = _error_ratio_run(docs, "s7b")
    for _ in range(3):
        stable.reconcile(time.time(), measure)
        time.sleep(1.1)
    assert (
        stable.phase == "Running" and [m.phase for m in stable.results[0].measurements] == ["Successful"] * 3
    )


def test_an_unreachable_prometheus_is_an_error_counted_in_a_row(docs: list[dict[str, Any]]) -> None:
    measure = PrometheusQuery(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    run = _error_ratio_run(docs, "c4n")
    # consecutiveErrorLimit 3; the retry after an Error is 10 s, compressed x60 here.
    _run_until_done(run, measure, 10)
    result = run.results[0]
    assert run.phase == "Error" and (result.error, result.count) == (4, 0)
    assert run.message.startswith(
        'Metric "error-ratio" assessed Error due to consecutiveErrors (4) > consecutiveErrorLimit (3)'
    )
