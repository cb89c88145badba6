"""Every metric an AnalysisTemplate, a PrometheusRule or a dashboard reads has a producer in the render: the
program that exports it (forkcast_contract.metric_names) runs in a workload that a PodMonitor or ServiceMonitor
scrapes on a named port of that very container. A third-party exporter that runs in the render as a sidecar
(``EXPORTERS``: redis_exporter beside each Redis) is such a producer too, found by its image. A recording rule of the
render, or a component the cluster provides (manifests/provided-by-cluster.yaml), counts as a producer too.

Without this, a query over a series nobody exports returns nothing forever: the canary's analysis is
Inconclusive at every step and an alert can never fire, while every object is schema-valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser

from forkcast_contract import metric_names
from forkcast_delivery import workspace
from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import PodTemplate, matches, matches_plain, of_kind, ref, resolve_port
from forkcast_delivery.render import Doc

RULE = "metrics"
# Series Prometheus writes itself (https://prometheus.io/docs/concepts/jobs_instances/, alerting rules' ALERTS).
PROMETHEUS_OWN = frozenset(
    {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
)
# Third-party exporters that run in the render (not forkcast programs), by the prefix of the series they export:
# the image repository (without registry host, tag or digest) of the container that exports them.
# redis_exporter names every Redis series redis_* (its --namespace flag, default "redis"; exporter/exporter.go maps
# INFO's used_memory to redis_memory_used_bytes and maxmemory to redis_memory_max_bytes, oliver006/redis_exporter).
EXPORTERS = {"redis_": "oliver006/redis_exporter"}
# Suffixes client libraries add to a family name (histogram/summary parts, Info, counters' _created).
SUFFIXES = ("_bucket", "_count", "_sum", "_info", "_created", "_total")
# Argo Rollouts' {{args.x}} and Grafana's $var / ${var} / $__rate_interval stand for label values or ranges.
_ARGO_ARG = re.compile(r"\{\{\s*args\.[\w-]+\s*\}\}")


def _argo_args(query: str) -> str:
    """Argo Rollouts' {{args.x}}: a label value inside quotes, a number (a threshold) outside."""
    return _ARGO_ARG.sub("1", re.sub(r'"[^"]*"', lambda m: _ARGO_ARG.sub("x", m.group(0)), query))


_GRAFANA_RANGE = re.compile(r"\$__(rate_)?interval|\$__range")
_GRAFANA_VAR = re.compile(r"\$\{?\w+\}?")


@dataclass(frozen=True)
class Query:
    reader: str  # Kind/name (and which part)
    expr: str


def _dashboard_exprs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "expr" and isinstance(child, str):
                yield child
            else:
                yield from _dashboard_exprs(child)
    elif isinstance(value, list):
        for child in value:
            yield from _dashboard_exprs(child)


def readers(ctx: Context) -> tuple[Doc, ...]:
    """The overlay's documents and the cluster-wide monitoring content read against its workloads."""
    return ctx.docs + ctx.observability


def queries(ctx: Context) -> Iterator[Query]:
    docs = readers(ctx)
    for template in of_kind(docs, "AnalysisTemplate", "ClusterAnalysisTemplate"):
        for metric in template["spec"].get("metrics") or []:
            prometheus = (metric.get("provider") or {}).get("prometheus")
            if prometheus:
                yield Query(f"{ref(template)} metric {metric['name']}", _argo_args(prometheus["query"]))
    for rule_doc in of_kind(docs, "PrometheusRule"):
        for group in rule_doc["spec"].get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("record") or rule.get("alert")
                yield Query(f"{ref(rule_doc)} rule {name}", str(rule["expr"]))
    for config in of_kind(docs, "ConfigMap"):
        if (config["metadata"].get("labels") or {}).get("grafana_dashboard") is None:
            continue
        for file_name, text in (config.get("data") or {}).items():
            for expr in _dashboard_exprs(json.loads(text)):
                expr = _GRAFANA_VAR.sub("x", _GRAFANA_RANGE.sub("5m", expr))
                yield Query(f"{ref(config)} dashboard {file_name}", expr)


def _walk(node: Any) -> Iterator[str]:
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        else:
            for m in node.matchers.matchers:
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
                    yield m.value
        return
    children: list[Any] = []
    if isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, promql_parser.AggregateExpr):
        children = [node.expr, node.param]
    elif isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(node, promql_parser.MatrixSelector):
        children = [node.vector_selector]
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        children = [node.expr]
    for child in children:
        if child is not None:
            yield from _walk(child)


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (ValueError when it does not parse)."""
    return set(_walk(promql_parser.parse(expr)))


def contract_name(series: str) -> str | None:
    """The metric_names constant a series belongs to (a histogram's _bucket to its family, and so on)."""
    defined = set(metric_names.names().values())
    if series in defined:
        return series
    for suffix in SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in defined:
            return series.removesuffix(suffix)
    return None


def _scraped_by_pod_monitor(ctx: Context, template: PodTemplate, container: dict[str, Any]) -> str | None:
    names = {p.get("name") for p in container.get("ports") or []}
    for monitor in of_kind(ctx.docs, "PodMonitor"):
        if not matches(monitor["spec"].get("selector"), template.labels):
            continue
        for endpoint in monitor["spec"].get("podMetricsEndpoints") or []:
            if endpoint.get("port") in names:
                return ref(monitor)
    return None


def _scraped_by_service_monitor(ctx: Context, template: PodTemplate, container: dict[str, Any]) -> str | None:
    numbers = {int(p["containerPort"]) for p in container.get("ports") or []}
    for monitor in of_kind(ctx.docs, "ServiceMonitor"):
        endpoints = {e.get("port") for e in monitor["spec"].get("endpoints") or []}
        for service in of_kind(ctx.docs, "Service"):
            if not matches(monitor["spec"].get("selector"), service["metadata"].get("labels") or {}):
                continue
            if not matches_plain(service["spec"].get("selector"), template.labels):
                continue
            for port in service["spec"].get("ports") or []:
                target = resolve_port(template, port.get("targetPort", port["port"]))
                if port.get("name") in endpoints and target in numbers:
                    return ref(monitor)
    return None


def exporter_image(series: str) -> str | None:
    """The image repository of the third-party exporter that exports ``series`` (None: no known exporter)."""
    found = [image for prefix, image in EXPORTERS.items() if series.startswith(prefix)]
    return found[0] if len(found) == 1 else None


def _image_is(container: dict[str, Any], image: str) -> bool:
    """Whether the container runs ``image`` from any registry (docker.io/, quay.io/ ...), at any tag or digest."""
    name = workspace.repository(str(container.get("image", "")))
    return name == image or name.endswith("/" + image)


def producers(ctx: Context, program: str, *, image: str | None = None) -> tuple[list[str], list[str]]:
    """(workloads running ``program``, or a container of ``image`` when given, and the monitors that scrape them on
    a named port of that container)."""
    running, monitors = [], []
    for template in ctx.templates:
        for container in template.spec.get("containers") or []:
            if image is not None and not _image_is(container, image):
                continue
            if image is None and ctx.program_of(dict(container)) != program:
                continue
            running.append(template.name)
            found = _scraped_by_pod_monitor(ctx, template, container) or _scraped_by_service_monitor(
                ctx, template, container
            )
            if found:
                monitors.append(found)
    return running, monitors


def check(ctx: Context) -> list[Problem]:
    problems = []
    recorded = {
        str(rule["record"])
        for doc in of_kind(readers(ctx), "PrometheusRule")
        for group in doc["spec"].get("groups") or []
        for rule in group.get("rules") or []
        if "record" in rule
    }
    external = set((ctx.provided.get("metrics") or {}).keys())
    for query in queries(ctx):
        try:
            series_names = metric_names_in(query.expr)
        except ValueError as exc:
            problems.append(Problem(RULE, query.reader, f"query does not parse: {exc}"))
            continue
        for series in sorted(series_names):
            if series in recorded or series in external or series in PROMETHEUS_OWN:
                continue
            name = contract_name(series)
            image = exporter_image(series) if name is None else None
            if image is not None:
                problems += _unproduced(query, series, image, *producers(ctx, image, image=image))
                continue
            if name is None:
                problems.append(
                    Problem(
                        RULE,
                        query.reader,
                        f"reads {series}: not in forkcast_contract.metric_names, not recorded by a rule, "
                        "not listed in provided-by-cluster.yaml",
                    )
                )
                continue
            program = metric_names.producer(name)
            running, monitors = producers(ctx, program) if program else ([], [])
            problems += _unproduced(query, series, str(program), running, monitors)
    return problems


def _unproduced(
    query: Query, series: str, producer: str, running: list[str], monitors: list[str]
) -> list[Problem]:
    """Why ``series`` has no scraped producer: none runs, or none that runs is scraped (empty when one is)."""
    if not running:
        return [Problem(RULE, query.reader, f"reads {series}: its producer {producer} runs in no workload")]
    if not monitors:
        return [
            Problem(
                RULE,
                query.reader,
                f"reads {series}: {', '.join(running)} ({producer}) is scraped by no PodMonitor/"
                "ServiceMonitor on a named port of its container",
            )
        ]
    return []
