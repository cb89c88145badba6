"""The wiring checks over the real overlays: each passes on the manifests as committed, and each has a twin that
breaks a copy of the render on purpose and sees the check fail for that reason (issue 15's proof)."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.checks import Problem, rules
from forkcast_delivery.context import Context, build
from forkcast_delivery.objects import matches
from forkcast_delivery.render import Doc

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ("dev", "prod", "local")

Edit = Callable[[list[Doc]], None]


def broken(ctx: Context, edit: Edit, **fields: Any) -> Context:
    """A copy of ``ctx`` whose rendered documents ``edit`` changed (and other fields replaced)."""
    docs = copy.deepcopy(list(ctx.docs))
    edit(docs)
    render = dataclasses.replace(ctx.render, docs=tuple(docs))
    return dataclasses.replace(ctx, render=render, **fields)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(docs: list[Doc], kind: str, name: str) -> dict[str, Any]:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    first: dict[str, Any] = spec["containers"][0]
    return first


def messages(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems)


@pytest.mark.parametrize("rule", sorted(rules()))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_is_wired(contexts: dict[str, Context], overlay: str, rule: str) -> None:
    problems = rules()[rule](contexts[overlay])
    assert problems == [], messages(problems)


def _drop_monitors_of(app: str) -> Any:
    def edit(docs: list[Doc]) -> None:
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and d["spec"].get("selector", {}).get("app.kubernetes.io/name") == app
        ]
        service_labels = [s["metadata"].get("labels") or {} for s in services]
        labels = {"app.kubernetes.io/name": app}
        docs[:] = [
            d
            for d in docs
            if not (d["kind"] == "PodMonitor" and matches(d["spec"]["selector"], labels))
            and not (
                d["kind"] == "ServiceMonitor"
                and any(matches(d["spec"]["selector"], sl) for sl in service_labels)
            )
        ]

    return edit


def test_metrics_twin_unscraped_online_auc_job(contexts: dict[str, Context]) -> None:
    problems = rules()["metrics"](broken(contexts["dev"], _drop_monitors_of("online-auc")))
    assert (
        Problem(
            "metrics",
            "AnalysisTemplate/inference-online-auc metric online-auc-vs-stable",
            "reads forkcast_online_auc_recent_loko_min: Deployment/online-auc (forkcast-online-auc) is scraped by no "
            "PodMonitor/ServiceMonitor on a named port of its container",
        )
        in problems
    ), messages(problems)
    assert all("forkcast_online_auc" in p.message for p in problems), messages(problems)


def _without_redis_exporters(docs: list[Doc]) -> None:
    for name in ("redis", "redis-events"):
        spec = find(docs, "StatefulSet", name)["spec"]["template"]["spec"]
        spec["containers"] = [c for c in spec["containers"] if "redis_exporter" not in c["image"]]


# The rules reading redis_exporter's series (manifests/observability/prometheus-rules.yaml), in sorted order.
REDIS_RULE_SERIES = [
    ("RedisClusterMasterWithoutReplica", "redis_cluster_state"),
    ("RedisClusterMasterWithoutReplica", "redis_connected_slaves"),
    ("RedisClusterMasterWithoutReplica", "redis_instance_info"),
    ("RedisClusterSlotsFailing", "redis_cluster_slots_fail"),
    ("RedisClusterSlotsFailing", "redis_cluster_slots_pfail"),
    ("RedisClusterStateNotOk", "redis_cluster_state"),
    ("RedisMemoryHigh", "redis_memory_max_bytes"),
    ("RedisMemoryHigh", "redis_memory_used_bytes"),
]


def test_metrics_twin_redis_without_its_exporter(contexts: dict[str, Context]) -> None:
    """A third-party exporter is a producer only where its image runs in the render (rule metrics, EXPORTERS)."""
    problems = rules()["metrics"](broken(contexts["dev"], _without_redis_exporters))
    assert sorted(str(p) for p in problems) == [
        f"[metrics] PrometheusRule/forkcast rule {rule}: reads {series}: its producer "
        "oliver006/redis_exporter runs in no workload"
        for rule, series in REDIS_RULE_SERIES
    ]


def test_metrics_twin_redis_exporters_unscraped(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        _drop_monitors_of("redis")(docs)
        _drop_monitors_of("redis-events")(docs)

    problems = rules()["metrics"](broken(contexts["prod"], edit))
    assert sorted(str(p) for p in problems) == [
        f"[metrics] PrometheusRule/forkcast rule {rule}: reads {series}: StatefulSet/redis, "
        "StatefulSet/redis-events (oliver006/redis_exporter) is scraped by no PodMonitor/ServiceMonitor on a named "
        "port of its container"
        for rule, series in REDIS_RULE_SERIES
    ]


def test_metrics_twin_missing_workload(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        docs[:] = [d for d in docs if not (d["kind"] == "Deployment" and d["metadata"]["name"] == "drift")]

    problems = rules()["metrics"](broken(contexts["prod"], edit))
    hits = [
        p
        for p in problems
        if "reads forkcast_drift_feature_psi: its producer forkcast-drift runs in no workload" in p.message
    ]
    assert any(p.subject.startswith("PrometheusRule/") for p in hits), messages(problems)


def test_metrics_twin_renamed_metrics_port(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        for port in container(docs, "Rollout", "inference")["ports"]:
            port["name"] = "web"

    problems = rules()["metrics"](broken(contexts["dev"], edit))
    assert any(
        "reads forkcast_inference_request_seconds_count: Rollout/inference (forkcast-inference) is scraped by no"
        in p.message
        for p in problems
    ), messages(problems)


def test_metrics_twin_name_outside_the_contract(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        template = find(docs, "AnalysisTemplate", "inference-error-ratio")
        query = template["spec"]["metrics"][0]["provider"]["prometheus"]
        query["query"] = query["query"].replace(
            "forkcast_inference_request_seconds_count", "forkcast_inference_reqs"
        )

    problems = rules()["metrics"](broken(contexts["dev"], edit))
    assert [
        p.message for p in problems if p.subject.startswith("AnalysisTemplate/inference-error-ratio")
    ] == [
        "reads forkcast_inference_reqs: not in forkcast_contract.metric_names, not recorded by a rule, "
        "not listed in provided-by-cluster.yaml"
    ]


def test_services_twin_target_port_and_selector(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        find(docs, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "htp"
        find(docs, "Service", "inference-canary")["spec"]["selector"] = {"app.kubernetes.io/name": "inferenc"}

    problems = rules()["services"](broken(contexts["dev"], edit))
    assert sorted(p.subject for p in problems) == ["Service/gateway", "Service/inference-canary"]
    by_subject = {p.subject: p.message for p in problems}
    assert (
        by_subject["Service/gateway"]
        == "port http targets 'htp'/TCP, which Deployment/gateway does not declare"
    )
    assert "selects no pod template" in by_subject["Service/inference-canary"]


def _gateway_configmap(docs: list[Doc]) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == "ConfigMap" and "FORKCAST_UPSTREAMS" in (d.get("data") or {})]
    return doc


def test_env_twin_missing_required_setting(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        del _gateway_configmap(docs)["data"]["FORKCAST_UPSTREAMS"]

    problems = rules()["env"](broken(contexts["prod"], edit))
    assert len(problems) == 1, messages(problems)
    assert problems[0].subject == "Deployment/gateway"
    assert "GatewaySettings" in problems[0].message and "FORKCAST_UPSTREAMS" in problems[0].message


def test_env_twin_unread_variable(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        container(docs, "Rollout", "inference")["env"].append(
            {"name": "FORKCAST_MODEL_URL", "value": "s3://x/"}
        )

    problems = rules()["env"](broken(contexts["dev"], edit))
    assert [p.message for p in problems] == [
        "container inference (forkcast-inference): sets FORKCAST_MODEL_URL, which no settings class of it reads"
    ]


def test_env_twin_listening_port_not_declared(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        for var in container(docs, "Rollout", "inference")["env"]:
            if var["name"] == "FORKCAST_PORT":
                var["value"] = "8000"
        for var in container(docs, "Deployment", "gateway")["env"]:
            if var["name"] == "FORKCAST_HOST":
                var["value"] = "127.0.0.1"

    problems = rules()["env"](broken(contexts["prod"], edit))
    assert sorted(str(p) for p in problems) == [
        "[env] Deployment/gateway: container gateway (forkcast-gateway): GatewaySettings binds 127.0.0.1 (host): "
        "unreachable from outside the pod",
        "[env] Rollout/inference: container inference (forkcast-inference): InferenceSettings listens on 8000 "
        "(port), which the container does not declare",
    ]


def test_references_twin(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        gateway = container(docs, "Deployment", "gateway")
        gateway["envFrom"].append({"secretRef": {"name": "forkcast-missing"}})
        (redis_url,) = [var for var in gateway["env"] if var["name"] == "REDIS_URL"]
        redis_url["valueFrom"]["secretKeyRef"]["key"] = "uri"

    problems = rules()["references"](broken(contexts["dev"], edit))
    assert sorted(p.message for p in problems) == [
        "references Secret forkcast-missing: neither rendered nor listed in provided-by-cluster.yaml",
        "references Secret forkcast-redis-gateway key uri: the listed in provided-by-cluster.yaml Secret has no "
        "such key",
    ]


def test_commands_twin(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        container(docs, "Deployment", "gateway")["command"] = ["forkcast-gatway"]

    problems = rules()["commands"](broken(contexts["dev"], edit))
    assert [str(p) for p in problems] == [
        "[commands] Deployment/gateway: container gateway runs 'forkcast-gatway', not a console script of "
        "forkcast-gateway (forkcast-gateway)"
    ]


def test_commands_twin_mutable_tag(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        gateway = container(docs, "Deployment", "gateway")
        gateway["image"] = gateway["image"].split("@")[0].rsplit(":", 1)[0] + ":main"

    problems = rules()["commands"](broken(contexts["dev"], edit))
    assert [p.message for p in problems] == [
        "container gateway: image 'registry.gitlab.com/forkcast/forkcast/gateway:main' is not pinned by digest "
        "or version tag"
    ]


def test_commands_twin_image_not_renamed(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        container(docs, "Deployment", "gateway")["image"] = "forkcast-gateway"

    problems = rules()["commands"](broken(contexts["prod"], edit))
    assert [p.message for p in problems] == [
        "container gateway: image 'forkcast-gateway' is not renamed by an images: entry"
    ]


def test_network_twin_open_redis(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        docs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "redis-from-anywhere"},
                "spec": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"ports": [{"port": 6379}]}],
                },
            }
        )

    problems = rules()["network"](broken(contexts["dev"], edit))
    assert "admits (pod of another namespace) -> redis on 6379/TCP, which flows.yaml does not list" in [
        p.message for p in problems
    ], messages(problems)


def test_network_twin_egress_without_excepts_reaches_the_metadata_address(
    contexts: dict[str, Context],
) -> None:
    def edit(docs: list[Doc]) -> None:
        for policy in docs:
            if policy["kind"] == "NetworkPolicy" and policy["metadata"]["name"] == "drift-egress":
                for rule in policy["spec"]["egress"]:
                    for peer in rule.get("to") or []:
                        peer.get("ipBlock", {}).pop("except", None)

    problems = rules()["network"](broken(contexts["prod"], edit))
    assert sorted(p.message for p in problems) == [
        "admits drift -> (cloud metadata 169.254.169.254) on 443/TCP, which flows.yaml does not list",
        "admits drift -> (private address 10.0.0.1) on 443/TCP, which flows.yaml does not list",
    ]


def test_network_twin_missing_flow(contexts: dict[str, Context]) -> None:
    ctx = contexts["dev"]
    flows = dict(ctx.flows)
    flows["flows"] = [f for f in flows["flows"] if not (f["from"] == "gateway" and f["to"] == "inference")]
    problems = rules()["network"](dataclasses.replace(ctx, flows=flows))
    assert [p.message for p in problems] == [
        "admits gateway -> inference on 8001/TCP, which flows.yaml does not list"
    ]


def test_network_twin_policy_refuses_a_listed_flow(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        for policy in docs:
            if policy["kind"] != "NetworkPolicy":
                continue
            for rule in policy["spec"].get("ingress") or []:
                for port in rule.get("ports") or []:
                    if port.get("port") in (8001, "http") and matches(
                        policy["spec"]["podSelector"], {"app.kubernetes.io/name": "inference"}
                    ):
                        port["port"] = 8002

    problems = rules()["network"](broken(contexts["prod"], edit))
    refused = [p.message for p in problems if p.message.startswith("flow gateway -> inference 8001/TCP")]
    assert refused and "ingress of inference refused by NetworkPolicy/" in refused[0], messages(problems)


def test_argocd_twin(contexts: dict[str, Context]) -> None:
    ctx = contexts["prod"]
    apps = [dict(a, spec=dict(a["spec"], ignoreDifferences=[])) for a in ctx.applications]
    problems = rules()["argocd"](dataclasses.replace(ctx, applications=apps))
    assert {p.message for p in problems} == {
        "does not ignore /spec/replicas of Deployment/gateway (owned by HorizontalPodAutoscaler/gateway)",
        "does not ignore /spec/replicas of Rollout/inference (owned by HorizontalPodAutoscaler/inference)",
    }


def test_argocd_local_overlay_needs_no_application_only_because_it_says_so(
    contexts: dict[str, Context], tmp_path: Path
) -> None:
    # manifests/overlays/local is run by forkcast-local, never synced by Argo CD: its kustomization says so.
    assert rules()["argocd"](contexts["local"]) == []
    overlay = tmp_path / "local"
    overlay.mkdir()
    kustomization = yaml.safe_load((ROOT / "manifests/overlays/local/kustomization.yaml").read_text())
    del kustomization["metadata"]["annotations"]["forkcast.io/deployed-by"]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    problems = rules()["argocd"](dataclasses.replace(contexts["local"], overlay_dir=overlay))
    assert [p.message for p in problems] == ["no Argo CD Application in deploy/argocd syncs this overlay"]


def test_argocd_twin_without_respect_ignore_differences(contexts: dict[str, Context]) -> None:
    ctx = contexts["dev"]

    def without(app: Doc) -> Doc:
        policy = dict(app["spec"].get("syncPolicy") or {})
        policy["syncOptions"] = [o for o in policy.get("syncOptions") or [] if "RespectIgnore" not in o]
        return dict(app, spec=dict(app["spec"], syncPolicy=policy))

    problems = rules()["argocd"](
        dataclasses.replace(ctx, applications=[without(a) for a in ctx.applications])
    )
    assert [p.message for p in problems] == [
        "syncs without RespectIgnoreDifferences=true: ignored replicas still apply"
    ]


def test_argocd_twin_prunable_settings(contexts: dict[str, Context]) -> None:
    def edit(docs: list[Doc]) -> None:
        for doc in docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("forkcast-gateway-"):
                del doc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]

    problems = rules()["argocd"](broken(contexts["dev"], edit))
    assert len(problems) == 1, messages(problems)
    assert problems[0].subject.startswith("ConfigMap/forkcast-gateway-")
    assert (
        problems[0].message == "referenced by Deployment/gateway but prunable (no sync-options Prune=false)"
    )


def test_argocd_twin_project_refuses_a_kind_and_the_namespace(contexts: dict[str, Context]) -> None:
    ctx = contexts["prod"]
    (project,) = copy.deepcopy(ctx.projects)
    project["spec"]["namespaceResourceWhitelist"] = [
        w for w in project["spec"]["namespaceResourceWhitelist"] if w["group"] != "networking.k8s.io"
    ]
    project["spec"]["destinations"] = [
        d for d in project["spec"]["destinations"] if d["namespace"] != "forkcast"
    ]
    problems = rules()["argocd"](dataclasses.replace(ctx, projects=[project]))
    assert sorted(p.message for p in problems) == [
        "project forkcast does not admit namespace forkcast",
        "project forkcast does not admit networking.k8s.io/Ingress",
        "project forkcast does not admit networking.k8s.io/NetworkPolicy",
    ]


def test_a_workload_removed_from_the_manifests_fails_the_check(tmp_path: Path) -> None:
    """On disk, not in memory: the online-AUC job's file dropped from the base's resources."""
    for tree in ("manifests", "rollouts"):
        shutil.copytree(ROOT / tree, tmp_path / tree)
    kustomization = tmp_path / "manifests" / "base" / "kustomization.yaml"
    doc = yaml.safe_load(kustomization.read_text())
    assert "online-auc.yaml" in doc["resources"]
    doc["resources"].remove("online-auc.yaml")
    kustomization.write_text(yaml.safe_dump(doc))
    ctx = build(ROOT, tmp_path / "manifests" / "overlays" / "prod")
    problems = rules()["metrics"](ctx)
    assert any(
        p.subject == "AnalysisTemplate/inference-online-auc metric online-auc-vs-stable"
        and p.message
        == "reads forkcast_online_auc_recent_loko_min: its producer forkcast-online-auc runs in no workload"
        for p in problems
    ), messages(problems)


def test_network_twin_alert_receiver_metrics_and_webhook_on_one_port(contexts: dict[str, Context]) -> None:
    """Issue 18.5: the receiver's webhook port admits Alertmanager only. The policy as it was (Prometheus admitted
    on 9109, where the webhook is, because the metrics shared the port) is reported; the render passes
    (test_every_overlay_is_wired), and there Prometheus reaches 9112 and nothing but Alertmanager reaches 9109."""

    def edit(docs: list[Doc]) -> None:
        policy = find(docs, "NetworkPolicy", "alert-receiver-ingress")
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                port["port"] = 9109

    problems = rules()["network"](broken(contexts["prod"], edit))
    assert sorted(p.message for p in problems) == [
        "admits prometheus -> alert-receiver on 9109/TCP, which flows.yaml does not list",
        "flow prometheus -> alert-receiver 9112/TCP of flows.yaml is not admitted: ingress of alert-receiver "
        "refused by NetworkPolicy/alert-receiver-ingress, NetworkPolicy/default-deny",
    ], messages(problems)
