"""A measurement of an AnalysisTemplate metric: its query against Prometheus' HTTP API, values as Argo reads them.

Argo's Prometheus provider (argo-rollouts metricproviders/prometheus/prometheus.go Run / processResponse) runs an
instant query and hands the conditions ``result``: a scalar's value, or the values of every sample of a vector (or
matrix). A failed request, a non-success answer or another result type is an error, which the AnalysisRun records
as an Error measurement (``analysis.AnalysisRun.reconcile`` turns the exception into one).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from forkcast_local.rehearsal.spec import Metric


class MeasurementError(RuntimeError):
    """Prometheus did not answer the query with a scalar, vector or matrix (the message says what happened)."""


class PrometheusQuery:
    """``measure(metric, query)`` for the AnalysisRun, against the Prometheus at ``url``."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def __call__(self, metric: Metric, query: str) -> list[float]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise MeasurementError(
                f"{metric.template}/{metric.name}: Prometheus answered {exc.code}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise MeasurementError(f"{metric.template}/{metric.name}: {exc}") from exc
        if body.get("status") != "success":
            raise MeasurementError(f"{metric.template}/{metric.name}: {body.get('error', body)}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        if data["resultType"] == "vector":
            return [float(s["value"][1]) for s in data["result"]]
        if data["resultType"] == "matrix":
            return [float(v[1]) for s in data["result"] for v in s["values"]]
        raise MeasurementError(f"{metric.template}/{metric.name}: Prometheus metric type not supported")
