"""Rules and dashboards ship once per cluster: no overlay renders a PrometheusRule or a Grafana dashboard ConfigMap
(both overlays share one cluster: two copies of the rule groups write every recorded series and ALERT twice, two
ConfigMaps with one dashboard uid land in one file of the Grafana sidecar), and manifests/observability renders
exactly one of each, in namespace monitoring. Each check has a twin that re-adds one to a scratch base."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.checks.argocd import project_refusals

from forkcast_monitoring import manifest_config
from forkcast_monitoring.manifest_config import MANIFESTS, OBSERVABILITY, cluster_wide

OVERLAYS = ["dev", "prod"]


def scratch_manifests(tmp_path: Path) -> Path:
    """A copy of manifests/ (and rollouts/, which the base includes) to break on purpose."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    shutil.copytree(MANIFESTS.parent / "rollouts", tmp_path / "rollouts")
    return tmp_path / "manifests"


def add_to_base(manifests: Path, name: str, doc: dict[str, object]) -> None:
    """Write ``doc`` to base/<name> and list it in the base's resources, as a change re-adding it would."""
    (manifests / "base" / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    kustomization = manifests / "base" / "kustomization.yaml"
    base = yaml.safe_load(kustomization.read_text())
    base["resources"].append(name)
    kustomization.write_text(yaml.safe_dump(base, sort_keys=False))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_overlay_renders_rules_or_dashboards(overlay: str) -> None:
    assert cluster_wide(manifest_config.render(overlay)) == []


def test_observability_renders_one_rule_and_one_dashboard_configmap_into_monitoring() -> None:
    objects = manifest_config.render_observability()
    assert cluster_wide(objects) == ["ConfigMap/forkcast-grafana-dashboards", "PrometheusRule/forkcast"]
    assert {o["metadata"]["namespace"] for o in objects} == {"monitoring"}
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_a_rule_readded_to_the_base_is_named_and_refused(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    rule = yaml.safe_load((manifests / OBSERVABILITY / "prometheus-rules.yaml").read_text())
    add_to_base(manifests, "prometheus-rules.yaml", rule)
    assert cluster_wide(manifest_config.render("prod", manifests)) == ["PrometheusRule/forkcast"]
    with pytest.raises(
        manifest_config.ManifestConfigError, match="overlay dev renders PrometheusRule/forkcast"
    ):
        manifest_config.load("dev", manifests)


def test_a_dashboard_configmap_readded_to_the_base_is_named(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "forkcast-grafana-dashboards", "labels": {"grafana_dashboard": "1"}},
        "data": {"forkcast-overview.json": "{}"},
    }
    add_to_base(manifests, "dashboards.yaml", configmap)
    assert cluster_wide(manifest_config.render("dev", manifests)) == ["ConfigMap/forkcast-grafana-dashboards"]


# -- the Application that ships them -----------------------------------------------------------------------------

ARGOCD = MANIFESTS.parent / "deploy" / "argocd"


def observability_sync_problems(app: dict[str, Any], project: dict[str, Any]) -> list[str]:
    """Why Argo CD would not keep manifests/observability synced into monitoring (empty: it would)."""
    spec, problems = app["spec"], []
    if spec["source"]["path"] != f"manifests/{OBSERVABILITY}":
        problems.append(f"the Application syncs {spec['source']['path']}")
    dest = spec["destination"]
    if dest["namespace"] != "monitoring":
        problems.append(f"the Application deploys to namespace {dest['namespace']}")
    if spec.get("syncPolicy", {}).get("automated") != {"prune": True, "selfHeal": True}:
        problems.append("sync is not automated with prune and selfHeal")
    # Whether the project admits the repository, the namespace and every kind: the manifests check's own reading.
    return problems + project_refusals(app, project, manifest_config.render_observability())


def argocd(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ARGOCD / name).read_text()))


def test_argocd_syncs_observability_into_monitoring() -> None:
    assert observability_sync_problems(argocd("app-observability.yaml"), argocd("project.yaml")) == []


def test_the_sync_check_names_a_destination_and_a_kind_the_project_does_not_admit() -> None:
    project = argocd("project.yaml")
    project["spec"]["destinations"] = [
        d for d in project["spec"]["destinations"] if d["namespace"] != "monitoring"
    ]
    project["spec"]["namespaceResourceWhitelist"] = [
        w for w in project["spec"]["namespaceResourceWhitelist"] if w["group"] != "monitoring.coreos.com"
    ]
    assert observability_sync_problems(argocd("app-observability.yaml"), project) == [
        "project forkcast does not admit namespace monitoring",
        "project forkcast does not admit monitoring.coreos.com/PrometheusRule",
    ]
