"""The templates' own queries, run by the engine against a real Prometheus configured from the render
(``observability.file_sd_prometheus_config``) scraping pods it labels with the rendered PodMonitor's relabelings:
the error-ratio metric fails the canary hash and passes the stable one, an unreachable Prometheus is an Error
measurement counted in a row (consecutiveErrorLimit), and a monitor that stops copying the pod-template hash makes
the rehearsal refuse, naming it. Stand-in pods serve fixed-rate counters."""

from __future__ import annotations

import copy
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forkcast_delivery.render import render

from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import Prometheus
from forkcast_local import observability
from forkcast_local.rehearsal import spec as spec_mod
from forkcast_local.rehearsal.analysis import AnalysisRun
from forkcast_local.rehearsal.prometheus import PrometheusQuery
from forkcast_local.rehearsal.runner import RehearsalError, prometheus_series, require_labels
from forkcast_local.rehearsal.scrape import ScrapedPod, file_sd_entries, write_targets
from forkcast_monitoring.manifest_config import from_objects, render_observability

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


def _prometheus(out: Path, docs: list[dict[str, Any]], pods: list[ScrapedPod]) -> Prometheus:
    """A Prometheus configured from ``docs`` as the rehearsal configures its own, ``pods`` as the inference targets."""
    monitoring = from_objects(docs, "dev", render_observability(ROOT / "manifests"))
    config = observability.file_sd_prometheus_config(out, monitoring, docs, ROOT / "manifests", 0.5)
    write_targets(observability.targets_file(out / "targets", "inference"), file_sd_entries(pods))
    return Prometheus(out / "data", config=config)


@pytest.fixture
def prometheus(tmp_path: Path, docs: list[dict[str, Any]]) -> Iterator[str]:
    stable, canary = StandInPod(600, 0.0), StandInPod(600, 0.2)
    pods = [
        ScrapedPod("inference-s7b-1", "forkcast-dev", {HASH_LABEL: "s7b"}, stable.address),
        ScrapedPod("inference-c4n-1", "forkcast-dev", {HASH_LABEL: "c4n", "app": "x"}, canary.address),
    ]
    with _prometheus(tmp_path, docs, pods) as server:
        yield server.url
    for pod in (stable, canary):
        pod.server.shutdown()


def test_prometheus_labels_the_pods_with_the_rendered_podmonitor_relabelings(prometheus: str) -> None:
    """Prometheus itself applies the rendered relabelings to the pods' meta labels: the hash and the namespace are
    copied, the other pod labels and every ``__meta`` label are not."""
    require_labels(prometheus, "inference", "forkcast-dev", "c4n", 1, timeout_s=20)
    (series,) = prometheus_series(prometheus, 'up{rollouts_pod_template_hash="c4n"}')
    assert {k: v for k, v in series.items() if k not in ("instance", "__name__")} == {
        "job": "inference",
        "namespace": "forkcast-dev",
        "rollouts_pod_template_hash": "c4n",
    }


def test_the_rehearsal_refuses_a_monitor_that_does_not_copy_the_pod_template_hash(
    tmp_path: Path, docs: list[dict[str, Any]]
) -> None:
    """The inference PodMonitor without its rollouts-pod-template-hash relabeling (a copy of the render): the
    pods are scraped, but not with the label the AnalysisTemplates select by, and ``require_labels`` says so."""
    edited = copy.deepcopy(docs)
    (monitor,) = [d for d in edited if d["kind"] == "PodMonitor" and d["metadata"]["name"] == "inference"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint["relabelings"] = [
        r for r in endpoint["relabelings"] if r["targetLabel"] != "rollouts_pod_template_hash"
    ]
    pod = StandInPod(600, 0.0)
    with _prometheus(
        tmp_path, edited, [ScrapedPod("inference-s7b-1", "forkcast-dev", {HASH_LABEL: "s7b"}, pod.address)]
    ) as server:
        # Scraped all the same: the namespace is copied, the hash is not.
        require_labels_without_hash = 'up{job="inference",namespace="forkcast-dev"}'
        deadline = time.monotonic() + 20
        while not prometheus_series(server.url, require_labels_without_hash) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert prometheus_series(server.url, require_labels_without_hash)
        with pytest.raises(
            RehearsalError,
            match=r"the rendered monitor inference must copy the pods' namespace and rollouts-pod-template-hash",
        ):
            require_labels(server.url, "inference", "forkcast-dev", "s7b", 1, timeout_s=2)
    pod.server.shutdown()


def test_a_render_without_a_monitor_for_the_inference_pods_is_refused(docs: list[dict[str, Any]]) -> None:
    edited = [d for d in docs if not (d["kind"] == "PodMonitor" and d["metadata"]["name"] == "inference")]
    monitoring = from_objects(edited, "dev", render_observability(ROOT / "manifests"))
    assert (
        observability.monitor_of(
            from_objects(docs, "dev", render_observability(ROOT / "manifests")), "inference"
        )
        == "inference"
    )
    with pytest.raises(
        observability.MonitorError,
        match=r"has 0 PodMonitor/ServiceMonitor endpoints scraping workload inference",
    ):
        observability.monitor_of(monitoring, "inference")


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
