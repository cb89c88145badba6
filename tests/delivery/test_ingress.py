"""The way in (manifests/base/ingress.yaml) agrees with the gateway: the ingress-nginx body-size and timeout
annotations of every rendered overlay are derived from the gateway settings' defaults (max_body_bytes,
body_timeout_s, upstream_timeout_s), and every overlay gives the Ingress its own host with TLS. Each check has a
twin that breaks the input on purpose and sees the check name what broke."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
from forkcast_delivery import render as delivery_render

from forkcast_gateway.edge import EXEMPT
from forkcast_gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
NGINX = "nginx.ingress.kubernetes.io/"
PLACEHOLDER_HOST = "HOST"  # the base's value, which each overlay's patch replaces


def gateway_defaults() -> dict[str, float]:
    """The gateway's limits as its settings class declares them (not as this machine's environment sets them)."""
    fields = GatewaySettings.model_fields
    return {name: fields[name].default for name in ("max_body_bytes", "body_timeout_s", "upstream_timeout_s")}


def nginx_size_bytes(value: str) -> int:
    """An nginx size (``1024``, ``1024k``, ``1m``; https://nginx.org/en/docs/syntax.html) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value.strip())
    if match is None:
        raise ValueError(f"not an nginx size: {value!r}")
    unit = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * unit


def expected_annotations(limits: dict[str, float]) -> dict[str, int]:
    """What ingress.yaml's comment promises: body size = max_body_bytes; send timeout = body_timeout_s; read
    timeout = body_timeout_s + upstream_timeout_s, rounded up to whole seconds (the annotations' unit)."""
    return {
        "proxy-body-size": int(limits["max_body_bytes"]),
        "proxy-send-timeout": math.ceil(limits["body_timeout_s"]),
        "proxy-read-timeout": math.ceil(limits["body_timeout_s"] + limits["upstream_timeout_s"]),
    }


def annotation_mismatches(ingress: dict[str, Any], limits: dict[str, float]) -> list[str]:
    """Annotations that are missing or disagree with the gateway's limits, as ``name: found != expected``."""
    annotations = ingress["metadata"].get("annotations", {})
    out = []
    for name, want in expected_annotations(limits).items():
        raw = annotations.get(NGINX + name)
        if raw is None:
            out.append(f"{name}: missing != {want}")
            continue
        got = nginx_size_bytes(raw) if name == "proxy-body-size" else int(raw)
        if got != want:
            out.append(f"{name}: {got} != {want}")
    return out


def tls_problems(ingress: dict[str, Any]) -> list[str]:
    """What keeps the Ingress from serving its own host over a cert-manager certificate."""
    spec, problems = ingress["spec"], []
    hosts = [rule.get("host") for rule in spec.get("rules", [])]
    tls_hosts = [h for entry in spec.get("tls", []) for h in entry.get("hosts", [])]
    if spec.get("ingressClassName") != "nginx":
        problems.append("ingressClassName is not nginx")
    if not hosts or any(h in (None, PLACEHOLDER_HOST) for h in hosts):
        problems.append(f"rule hosts not set by the overlay: {hosts}")
    if sorted(hosts) != sorted(tls_hosts):
        problems.append(f"tls hosts {tls_hosts} differ from rule hosts {hosts}")
    if not all(entry.get("secretName") for entry in spec.get("tls", [])) or not spec.get("tls"):
        problems.append("no tls secretName")
    if "cert-manager.io/cluster-issuer" not in ingress["metadata"].get("annotations", {}):
        problems.append("no cert-manager.io/cluster-issuer annotation")
    backends = {p["backend"]["service"]["name"] for r in spec.get("rules", []) for p in r["http"]["paths"]}
    if backends != {"gateway"}:
        problems.append(f"backends {sorted(backends)} are not the gateway Service alone")
    return problems


def ingress_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ingress,) = [d for d in docs if d["kind"] == "Ingress" and d["metadata"]["name"] == "gateway"]
    return ingress


@pytest.fixture(scope="module")
def ingresses() -> dict[str, dict[str, Any]]:
    return {
        o: ingress_of(list(delivery_render.render(ROOT / "manifests" / "overlays" / o).docs))
        for o in OVERLAYS
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_limits_match_the_gateway_settings(ingresses: dict[str, Any], overlay: str) -> None:
    assert annotation_mismatches(ingresses[overlay], gateway_defaults()) == []


def test_ingress_limit_that_drifts_from_the_gateway_is_named(ingresses: dict[str, Any]) -> None:
    broken = copy.deepcopy(ingresses["prod"])
    broken["metadata"]["annotations"][NGINX + "proxy-body-size"] = "10m"
    del broken["metadata"]["annotations"][NGINX + "proxy-send-timeout"]
    assert annotation_mismatches(broken, gateway_defaults()) == [
        f"proxy-body-size: {10 << 20} != {gateway_defaults()['max_body_bytes']}",
        "proxy-send-timeout: missing != 5",
    ]


def test_a_changed_gateway_timeout_makes_the_annotations_disagree(ingresses: dict[str, Any]) -> None:
    """The twin from the other side: the gateway waiting 30 s for a body would be cut off by nginx at 5 s."""
    limits = gateway_defaults() | {"body_timeout_s": 30.0}
    assert annotation_mismatches(ingresses["dev"], limits) == [
        "proxy-send-timeout: 5 != 30",
        "proxy-read-timeout: 6 != 31",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_serves_its_own_host_over_tls(ingresses: dict[str, Any], overlay: str) -> None:
    assert tls_problems(ingresses[overlay]) == []
    assert ingresses["dev"]["spec"]["rules"][0]["host"] != ingresses["prod"]["spec"]["rules"][0]["host"]


def test_the_base_placeholder_host_is_refused() -> None:
    """The twin: the base alone (no overlay patch) still has the placeholder host."""
    base = ingress_of(list(delivery_render.render(ROOT / "manifests" / "base").docs))
    assert tls_problems(base) == [f"rule hosts not set by the overlay: ['{PLACEHOLDER_HOST}']"]


def test_nginx_sizes_parse_as_nginx_reads_them() -> None:
    assert [nginx_size_bytes(v) for v in ("512", "1024k", "1m", "2G")] == [512, 1 << 20, 1 << 20, 2 << 30]
    with pytest.raises(ValueError, match="not an nginx size"):
        nginx_size_bytes("1 MB")


def exposed(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(path, pathType) of every rule of the rendered Ingresses."""
    return {
        (p["path"], p["pathType"])
        for d in docs
        if d["kind"] == "Ingress"
        for r in d["spec"].get("rules", [])
        for p in r["http"]["paths"]
    }


def unauthenticated_or_admin_exposed(paths: set[tuple[str, str]]) -> list[str]:
    """Gateway paths that must not reach the internet and that some Ingress path would route."""
    private = sorted({*EXEMPT, "/admin/keys/reload"})
    return [
        q
        for q in private
        if any(
            q == path or (kind == "Prefix" and (path == "/" or q.startswith(path))) for path, kind in paths
        )
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_client_api_is_exposed(overlay: str) -> None:
    paths = exposed(list(delivery_render.render(ROOT / "manifests" / "overlays" / overlay).docs))
    assert paths == {("/recommend/", "Prefix"), ("/feedback", "Exact")}
    assert unauthenticated_or_admin_exposed(paths) == []


def test_twin_a_catch_all_path_exposes_metrics_and_admin() -> None:
    leaked = unauthenticated_or_admin_exposed({("/", "Prefix")})
    assert "/metrics" in leaked and "/admin/keys/reload" in leaked
