"""The Kubernetes semantics the checks rely on, on small hand-written objects: selectors, NetworkPolicy rules,
how command/args combine with an image's ENTRYPOINT/CMD, PromQL metric extraction, YAML loading.

Unit tests: nothing here runs kubectl (rendering errors are in ../integration/test_render.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from forkcast_delivery import workspace
from forkcast_delivery.checks import network
from forkcast_delivery.checks.metrics import contract_name, metric_names_in
from forkcast_delivery.context import Context
from forkcast_delivery.objects import matches
from forkcast_delivery.render import Render, load_all

NS = "forkcast"


def pod(name: str, port: int, port_name: str = "http") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": name, "ports": [{"name": port_name, "containerPort": port}]}]
                },
            }
        },
    }


def policy(name: str, selector: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name}, "spec": {"podSelector": selector, **spec}}


def ctx(*docs: dict[str, Any]) -> Context:
    flows = {
        "peers": {
            "web": {"labels": {"app": "web"}},
            "db": {"labels": {"app": "db"}},
            "scraper": {"namespace": "monitoring", "labels": {"app": "scraper"}},
            "internet": {"cidr": "0.0.0.0/0"},
        }
    }
    return Context(Path(), Path(), Render("t", NS, (pod("web", 8000), pod("db", 5432, "pg"), *docs)), flows)


def admitted(c: Context, source: str, dest: str, port: int, protocol: str = "TCP") -> bool:
    peers = network.peers(c)
    return network.admitted(c, peers[source], peers[dest], port, protocol)[0]


def test_selectors() -> None:
    labels = {"app": "web", "tier": "front"}
    assert matches({}, labels)
    assert matches(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
        },
        labels,
    )
    assert not matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )
    assert matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not matches(None, labels)


def test_unselected_pods_are_open_and_default_deny_closes_them() -> None:
    assert admitted(ctx(), "web", "db", 5432)
    closed = ctx(policy("deny", {}, policyTypes=["Ingress", "Egress"]))
    assert not admitted(closed, "web", "db", 5432)
    assert network.admitted(closed, *(network.peers(closed)[n] for n in ("web", "db")), 5432, "TCP")[1] == (
        "egress of web refused by NetworkPolicy/deny"
    )


def test_both_sides_must_admit_inside_the_namespace() -> None:
    ingress_only = ctx(
        policy("deny", {}, policyTypes=["Ingress", "Egress"]),
        policy(
            "db-in",
            {"matchLabels": {"app": "db"}},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}],
        ),
    )
    assert not admitted(ingress_only, "web", "db", 5432)
    both = ctx(
        *ingress_only.docs[2:],
        policy(
            "web-out",
            {"matchLabels": {"app": "web"}},
            policyTypes=["Egress"],
            egress=[{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}],
        ),
    )
    assert admitted(both, "web", "db", 5432)  # the named port "pg" resolves to 5432 on db
    assert not admitted(both, "web", "db", 5433)
    assert not admitted(both, "web", "db", 5432, "UDP")


def test_pod_selector_alone_means_the_policy_namespace() -> None:
    c = ctx(policy("web-in", {"matchLabels": {"app": "web"}}, ingress=[{"from": [{"podSelector": {}}]}]))
    assert admitted(c, "db", "web", 8000)
    assert not admitted(c, "scraper", "web", 8000)
    by_namespace = ctx(
        policy(
            "web-in",
            {"matchLabels": {"app": "web"}},
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            },
                            "podSelector": {"matchLabels": {"app": "scraper"}},
                        }
                    ]
                }
            ],
        )
    )
    assert admitted(by_namespace, "scraper", "web", 8000)
    assert not admitted(by_namespace, "db", "web", 8000)


def test_ip_blocks_admit_outside_addresses_only() -> None:
    c = ctx(
        policy(
            "web-out",
            {"matchLabels": {"app": "web"}},
            policyTypes=["Egress"],
            egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "endPort": 444}]}],
        )
    )
    assert admitted(c, "web", "internet", 444)
    assert not admitted(c, "web", "internet", 80)
    assert not admitted(c, "web", "db", 443)
    excepted = ctx(
        policy(
            "web-out",
            {"matchLabels": {"app": "web"}},
            policyTypes=["Egress"],
            egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/24"]}}]}],
        )
    )
    assert not admitted(excepted, "web", "internet", 443)


def test_policy_without_policy_types_has_egress_only_when_it_says_so() -> None:
    c = ctx(policy("web", {"matchLabels": {"app": "web"}}, ingress=[]))
    assert admitted(c, "web", "db", 5432)  # Ingress only: egress stays open
    assert not admitted(c, "db", "web", 8000)


def test_program_follows_kubernetes_command_rules() -> None:
    image = workspace.Image(frozenset({"p"}), ("tini", "--"), ("serve",))
    assert workspace.program({"command": ["/opt/venv/bin/run"]}, image) == "run"
    assert workspace.program({"args": ["other"]}, image) == "tini"
    plain = workspace.Image(frozenset({"p"}), (), ("serve",))
    assert workspace.program({}, plain) == "serve"
    assert workspace.program({"args": ["other"]}, plain) == "other"
    assert workspace.repository("registry:5000/a/b@sha256:00") == "registry:5000/a/b"
    assert workspace.repository("registry:5000/a/b:1.2") == "registry:5000/a/b"


def test_metric_names_of_a_query() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(forkcast_inference_request_seconds_bucket{a="x"}[2m])))'
        ' and on() max_over_time(({__name__="up"} - offset_me)[5m:1m]) > bool 1'
    )
    assert metric_names_in(expr) == {"forkcast_inference_request_seconds_bucket", "up", "offset_me"}
    assert contract_name("forkcast_inference_request_seconds_bucket") == "forkcast_inference_request_seconds"
    assert contract_name("forkcast_inference_served_info") == "forkcast_inference_served"
    assert contract_name("forkcast_inference_request") is None
    with pytest.raises(ValueError):
        metric_names_in("sum(rate(x[5m])")


def test_yaml_reads_a_bare_equals_sign_as_a_string() -> None:
    assert load_all("matchType: =\n---\n---\na: 1\n") == [{"matchType": "="}, {"a": 1}]
