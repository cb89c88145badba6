"""The NetworkPolicies of the render admit exactly the flows of manifests/flows.yaml, and no others.

Every (source peer, destination peer, port) is evaluated as Kubernetes does
(https://kubernetes.io/docs/concepts/services-networking/network-policies/): a pod selected by no policy of a
direction is open in that direction; a selected pod admits only what some rule of a selecting policy allows; a
connection needs the source's egress AND the destination's ingress when both are pods of the namespace, and only
the side in the namespace otherwise (other namespaces' policies are not ours). A rule peer with only a
podSelector means pods of the policy's own namespace; with a namespaceSelector, pods of the namespaces whose
labels match (kubernetes.io/metadata.name); an ipBlock only addresses outside the cluster (how pod addresses
match an ipBlock is implementation-defined, so they are not counted). Ports given by name resolve against the
destination pod's container ports; a rule without ports admits every port.

Beside the peers of the table, stand-ins probe for over-broad policies: an unlabelled pod of the namespace, an
unlabelled pod of another namespace, the cloud metadata address (169.254.169.254, where a node's credentials live)
and a private address (10.0.0.1: the cluster's own pods, Services and nodes, reached by IP). Ports probed: every
port of the table, every container port of the render, and one no one uses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import matches, of_kind, ref

RULE = "network"
# An address outside the cluster, as the `internet` peer's stand-in (TEST-NET-3, never a pod).
OUTSIDE = ipaddress.ip_address("203.0.113.10")
# Addresses no egress rule may reach unless the table names them.
PROBE_ADDRESSES = {
    "(cloud metadata 169.254.169.254)": ipaddress.ip_address("169.254.169.254"),
    "(private address 10.0.0.1)": ipaddress.ip_address("10.0.0.1"),
}
UNUSED_PORT = (1, "TCP")


@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str | None  # None: an address, not a pod
    labels: Mapping[str, str] = field(default_factory=dict)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @property
    def is_address(self) -> bool:
        return self.namespace is None


@dataclass(frozen=True)
class Flow:
    source: str
    destination: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination} {self.port}/{self.protocol}"


def peers(ctx: Context) -> dict[str, Peer]:
    namespace = ctx.render.namespace
    out = {}
    for name, spec in (ctx.flows.get("peers") or {}).items():
        labels = {k: str(v) for k, v in (spec.get("labels") or {}).items()}
        if "cidr" in spec:
            out[name] = Peer(name, None, address=OUTSIDE)
        else:
            out[name] = Peer(name, spec.get("namespace", namespace), labels)
    out["(unlabelled pod)"] = Peer("(unlabelled pod)", namespace)
    out["(pod of another namespace)"] = Peer("(pod of another namespace)", "elsewhere")
    out |= {name: Peer(name, None, address=address) for name, address in PROBE_ADDRESSES.items()}
    return out


def table(ctx: Context) -> set[Flow]:
    """The flows the overlay must admit: every untagged flow, and those tagged ``component: <name>`` when the
    overlay uses that kustomize Component (manifests/components/<name>), so a Component's flows are refused, and
    probed as such, everywhere else."""
    return {
        Flow(f["from"], f["to"], int(f["port"]), str(f.get("protocol", "TCP")))
        for f in ctx.flows.get("flows") or []
        if "component" not in f or str(f["component"]) in ctx.components
    }


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _rule_peer_admits(entry: Mapping[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in entry:
        if not peer.is_address:
            return False
        block = entry["ipBlock"]
        inside = peer.address in ipaddress.ip_network(block["cidr"])
        return inside and not any(peer.address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if peer.is_address:
        return False
    assert peer.namespace is not None
    if "namespaceSelector" in entry:
        if not matches(entry["namespaceSelector"], _namespace_labels(peer.namespace)):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return "podSelector" not in entry or matches(entry["podSelector"], peer.labels)


def _ports_admit(
    ports: list[Mapping[str, Any]] | None, port: int, protocol: str, dest: Peer, ctx: Context
) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        declared = entry.get("port")
        if declared is None:
            return True
        if isinstance(declared, str) and not declared.isdigit():
            if port in _named_ports(ctx, dest, declared, protocol):
                return True
            continue
        low = int(declared)
        if low <= port <= int(entry.get("endPort", low)):
            return True
    return False


def _named_ports(ctx: Context, peer: Peer, name: str, protocol: str) -> set[int]:
    if peer.namespace != ctx.render.namespace:
        return set()
    return {
        int(port["containerPort"])
        for template in ctx.templates
        if matches({"matchLabels": dict(peer.labels)}, template.labels) and peer.labels
        for _, port in template.ports()
        if port.get("name") == name and port.get("protocol", "TCP") == protocol
    }


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _direction_admits(
    ctx: Context, direction: str, pod: Peer, other: Peer, port: int, protocol: str, dest: Peer
) -> tuple[bool, list[str]]:
    """Whether ``pod``'s policies of ``direction`` admit the connection with ``other`` (and the policies that
    select ``pod``, to name them when they do not)."""
    namespace = ctx.render.namespace
    selecting = [
        p
        for p in of_kind(ctx.docs, "NetworkPolicy")
        if direction in _types(p) and matches(p["spec"].get("podSelector") or {}, pod.labels)
    ]
    if not selecting:
        return True, []
    key, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            entries = rule.get(side)
            peer_ok = not entries or any(_rule_peer_admits(e, other, namespace) for e in entries)
            if peer_ok and _ports_admit(rule.get("ports"), port, protocol, dest, ctx):
                return True, []
    return False, [ref(p) for p in selecting]


def admitted(ctx: Context, source: Peer, dest: Peer, port: int, protocol: str) -> tuple[bool, str]:
    """Whether the policies let ``source`` reach ``dest`` on port/protocol, and if not, which side refuses."""
    namespace = ctx.render.namespace
    if source.namespace == namespace:
        ok, policies = _direction_admits(ctx, "Egress", source, dest, port, protocol, dest)
        if not ok:
            return False, f"egress of {source.name} refused by {', '.join(policies)}"
    if dest.namespace == namespace:
        ok, policies = _direction_admits(ctx, "Ingress", dest, source, port, protocol, dest)
        if not ok:
            return False, f"ingress of {dest.name} refused by {', '.join(policies)}"
    return True, ""


def _probe_ports(ctx: Context, flows: set[Flow]) -> set[tuple[int, str]]:
    ports = {(f.port, f.protocol) for f in flows} | {UNUSED_PORT}
    for template in ctx.templates:
        ports |= {(int(p["containerPort"]), p.get("protocol", "TCP")) for _, p in template.ports()}
    return ports


def check(ctx: Context) -> list[Problem]:
    problems = []
    namespace = ctx.render.namespace
    known = peers(ctx)
    expected = table(ctx)
    problems += [
        Problem(RULE, "flows.yaml", f"{flow}: names a peer the table does not define")
        for flow in sorted(expected, key=str)
        if flow.source not in known or flow.destination not in known
    ]
    if problems:
        return problems
    for flow in sorted(expected, key=str):
        ok, why = admitted(ctx, known[flow.source], known[flow.destination], flow.port, flow.protocol)
        if not ok:
            problems.append(
                Problem(RULE, "NetworkPolicy", f"flow {flow} of flows.yaml is not admitted: {why}")
            )
    probes = sorted(_probe_ports(ctx, expected))
    for source in known.values():
        for dest in known.values():
            # A peer to itself is probed too (pods of one workload talking to each other, as Redis Cluster
            # nodes do on their bus port): only flows.yaml may admit it.
            if namespace not in (source.namespace, dest.namespace):
                continue
            extra = [
                f"{port}/{protocol}"
                for port, protocol in probes
                if Flow(source.name, dest.name, port, protocol) not in expected
                and admitted(ctx, source, dest, port, protocol)[0]
            ]
            if extra:
                problems.append(
                    Problem(
                        RULE,
                        "NetworkPolicy",
                        f"admits {source.name} -> {dest.name} on {', '.join(extra)}, which flows.yaml does not list",
                    )
                )
    return problems
