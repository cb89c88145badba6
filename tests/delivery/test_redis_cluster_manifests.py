"""The features Redis as a Redis Cluster in the manifests (issue 19.1, the Kubernetes side): component
manifests/components/redis-cluster, used by overlay prod-cluster.

The rendered StatefulSet is RUN: its two init containers' scripts and its redis-server command line, with the
kubelet's part done here (volumes materialised from the rendered ConfigMaps and stand-in Secrets, each mount path
moved under tmp_path, $(POD_NAME) expanded), as 6 local redis-servers; then the rendered bootstrap Job's script
against them. A broken manifest (a directive Redis refuses, a replica that cannot authenticate, a Job that does not
form 3 masters with 1 replica each, or forms them twice) fails here, not in a cluster. The wiring (who runs in
Cluster mode, which flows the policies admit) is checked on the render with forkcast_delivery's rules.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
from forkcast_delivery import redis_acl
from forkcast_delivery.checks import rules
from forkcast_delivery.checks.network import admitted, peers, table
from forkcast_delivery.context import Context, build
from forkcast_delivery.objects import of_kind
from forkcast_delivery.render import Doc, render

from forkcast_devservers.binaries import REDIS_SERVER
from forkcast_devservers.promtool import alert_rule_test
from forkcast_devservers.servers import RedisServer
from forkcast_devservers.servers.redis import CLUSTER_BUS_OFFSET, _cluster_ports

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "manifests" / "overlays" / "prod-cluster"
NAMESPACE = "forkcast"
K8S_VERSION = "1.32.0"
# The features consumers: containers whose REDIS_URL or FORKCAST_FEATURES_REDIS_URL is a features-url.
FEATURE_URL_VARS = ("REDIS_URL", "FORKCAST_FEATURES_REDIS_URL")


@pytest.fixture(scope="module")
def contexts() -> dict[str, Context]:
    return {name: build(ROOT, ROOT / "manifests" / "overlays" / name) for name in ("prod", "prod-cluster")}


@pytest.fixture(scope="module")
def docs(contexts: dict[str, Context]) -> list[Doc]:
    return list(contexts["prod-cluster"].docs)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def containers(docs: list[Doc]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Rollout", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                yield f"{doc['kind']}/{doc['metadata']['name']}", c
        elif doc["kind"] == "CronJob":
            for c in doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
                yield f"CronJob/{doc['metadata']['name']}", c


def secret_key(var: dict[str, Any]) -> tuple[str, str] | None:
    ref = (var.get("valueFrom") or {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


# --- the render ---------------------------------------------------------------------------------------------------


def test_the_overlay_is_prod_with_one_features_redis_replaced_by_a_cluster(
    contexts: dict[str, Context], docs: list[Doc]
) -> None:
    prod = list(contexts["prod"].docs)
    sets = {d["metadata"]["name"] for d in of_kind(docs, "StatefulSet")}
    assert sets == {"redis-cluster", "redis-events"}, "the single `redis` StatefulSet is replaced"
    assert {d["metadata"]["name"] for d in of_kind(prod, "StatefulSet")} == {"redis", "redis-events"}
    cluster = find(docs, "StatefulSet", "redis-cluster")["spec"]
    assert cluster["replicas"] == 6 and cluster["podManagementPolicy"] == "Parallel"
    # Its pods are the `redis` pods the Services, the PodMonitor and the clients' policies select.
    labels = cluster["template"]["metadata"]["labels"]
    for service in ("redis", "redis-headless"):
        assert find(docs, "Service", service)["spec"]["selector"].items() <= labels.items()
    assert find(docs, "PodMonitor", "redis")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = find(docs, "PodDisruptionBudget", "redis-cluster")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    # Everything else is prod's: same images, same model release.
    images = {c["image"] for _, c in containers(prod)}
    assert images <= {c["image"] for _, c in containers(docs)}
    assert (
        find(docs, "ConfigMap", "forkcast-model-release")["data"]
        == find(prod, "ConfigMap", "forkcast-model-release")["data"]
    )


def test_every_features_consumer_runs_in_cluster_mode(contexts: dict[str, Context], docs: list[Doc]) -> None:
    def consumers(rendered: list[Doc]) -> dict[str, dict[str, dict[str, Any]]]:
        out = {}
        for where, c in containers(rendered):
            env = {v["name"]: v for v in c.get("env") or []}
            if any(
                (secret_key(env[n]) or ("", ""))[1] == "features-url" for n in FEATURE_URL_VARS if n in env
            ):
                out[where] = env
        return out

    found = consumers(docs)
    assert set(found) == {"Rollout/inference", "Deployment/gateway", "Deployment/drift"}
    for where, env in found.items():
        assert env["FORKCAST_REDIS_CLUSTER"].get("value") == "1", where
    # The gateway's admin updates go to the Cluster; its rate-limit buckets (a plain client on REDIS_URL, whose
    # Lua script's keys a Cluster would spread) to the events Redis.
    gateway = found["Deployment/gateway"]
    assert secret_key(gateway["FORKCAST_FEATURES_REDIS_URL"]) == ("forkcast-redis-gateway", "features-url")
    assert secret_key(gateway["REDIS_URL"]) == ("forkcast-redis-gateway", "events-url")
    # prod is untouched: no consumer there is in Cluster mode.
    assert all("FORKCAST_REDIS_CLUSTER" not in env for env in consumers(list(contexts["prod"].docs)).values())


def test_the_env_rule_builds_the_settings_of_the_overlay_of_an_overlay(contexts: dict[str, Context]) -> None:
    ctx = contexts["prod-cluster"]
    assert rules()["env"](ctx) == []
    # prod-cluster names no image itself (they come from ../prod): the containers must still be traced to their
    # programs, or the env rule would check nothing. Twin: inference without its events Redis, which the inference
    # settings refuse in Cluster mode.
    broken = copy.deepcopy(list(ctx.docs))
    (container,) = find(broken, "Rollout", "inference")["spec"]["template"]["spec"]["containers"]
    container["env"] = [v for v in container["env"] if v["name"] != "FORKCAST_EVENTS_REDIS_URL"]
    render = dataclasses.replace(ctx.render, docs=tuple(broken))
    problems = rules()["env"](dataclasses.replace(ctx, render=render))
    assert [p.message for p in problems] == [
        "container inference (forkcast-inference): InferenceSettings: settings: Value error, "
        "FORKCAST_REDIS_CLUSTER=1 needs FORKCAST_EVENTS_REDIS_URL (a single Redis for the prediction events)"
    ]


def test_the_bus_port_is_admitted_only_between_cluster_nodes(contexts: dict[str, Context]) -> None:
    ctx, prod = contexts["prod-cluster"], contexts["prod"]
    assert rules()["network"](ctx) == []
    known = peers(ctx)
    node, bootstrap = known["redis"], known["redis-cluster-bootstrap"]
    bus = 6379 + CLUSTER_BUS_OFFSET
    assert admitted(ctx, node, node, bus, "TCP")[0]
    assert admitted(ctx, node, node, 6379, "TCP")[0], "a replica reaches its master's client port"
    for name in ("inference", "gateway", "drift", "redis-client", "redis-events", "(unlabelled pod)"):
        assert not admitted(ctx, known[name], node, bus, "TCP")[0], name
    assert not admitted(ctx, bootstrap, node, bus, "TCP")[0]
    assert admitted(ctx, bootstrap, node, 6379, "TCP")[0]
    # In prod (no component) the component's flows are not expected, and refused: its single Redis has no egress.
    assert not {f for f in table(prod) if "redis-cluster-bootstrap" in (f.source, f.destination)}
    assert admitted(prod, node, node, bus, "TCP") == (
        False,
        "egress of redis refused by NetworkPolicy/default-deny",
    )
    assert rules()["network"](prod) == []


def test_twin_without_the_bus_policy_the_flows_are_refused(contexts: dict[str, Context]) -> None:
    ctx = contexts["prod-cluster"]
    docs = [
        d
        for d in ctx.docs
        if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "redis-cluster-ingress")
    ]
    problems = rules()["network"](
        dataclasses.replace(ctx, render=dataclasses.replace(ctx.render, docs=tuple(docs)))
    )
    messages = sorted(p.message for p in problems)
    assert messages == [
        "flow redis -> redis 16379/TCP of flows.yaml is not admitted: ingress of redis refused by "
        "NetworkPolicy/default-deny, NetworkPolicy/redis-ingress",
        "flow redis -> redis 6379/TCP of flows.yaml is not admitted: ingress of redis refused by "
        "NetworkPolicy/default-deny, NetworkPolicy/redis-ingress",
        "flow redis-cluster-bootstrap -> redis 6379/TCP of flows.yaml is not admitted: ingress of redis refused by "
        "NetworkPolicy/default-deny, NetworkPolicy/redis-ingress",
    ]


def test_twin_a_bus_open_to_every_pod_is_reported(contexts: dict[str, Context]) -> None:
    ctx = contexts["prod-cluster"]
    docs = copy.deepcopy(list(ctx.docs))
    policy = find(docs, "NetworkPolicy", "redis-cluster-ingress")
    # The nodes' rule widened to "any pod of any namespace": its own namespace's other pods are still held back by
    # their egress policies, pods elsewhere are not.
    policy["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    problems = rules()["network"](
        dataclasses.replace(ctx, render=dataclasses.replace(ctx.render, docs=tuple(docs)))
    )
    messages = {p.message for p in problems}
    assert (
        "admits (pod of another namespace) -> redis on 6379/TCP, 16379/TCP, which flows.yaml does not list"
        in messages
    )


def test_twin_nodes_open_to_each_other_on_every_port_are_reported(contexts: dict[str, Context]) -> None:
    # A peer to itself is probed like any pair: nodes admitting each other on every port (rules without `ports`)
    # admit the redis_exporter's port between them, which flows.yaml does not list.
    ctx = contexts["prod-cluster"]
    docs = copy.deepcopy(list(ctx.docs))
    del find(docs, "NetworkPolicy", "redis-cluster-ingress")["spec"]["ingress"][0]["ports"]
    del find(docs, "NetworkPolicy", "redis-cluster-egress")["spec"]["egress"][0]["ports"]
    problems = rules()["network"](
        dataclasses.replace(ctx, render=dataclasses.replace(ctx.render, docs=tuple(docs)))
    )
    (problem,) = [p.message for p in problems if p.message.startswith("admits redis -> redis on ")]
    assert "9121/TCP" in problem and problem.endswith("which flows.yaml does not list")


def test_argo_cd_holds_the_overlay_to_the_prod_application(
    contexts: dict[str, Context], tmp_path: Path
) -> None:
    ctx = contexts["prod-cluster"]
    assert rules()["argocd"](ctx) == []
    # Application forkcast-prod syncs it once pointed there: its project must admit the bootstrap Job's kind.
    projects = copy.deepcopy(ctx.projects)
    for project in projects:
        whitelist = project["spec"]["namespaceResourceWhitelist"]
        project["spec"]["namespaceResourceWhitelist"] = [w for w in whitelist if w["kind"] != "Job"]
    problems = rules()["argocd"](dataclasses.replace(ctx, projects=projects))
    assert [(p.subject, p.message) for p in problems] == [
        ("Application/forkcast-prod", "project forkcast does not admit batch/Job")
    ]
    # Without the annotation naming that Application, nothing would sync it.
    overlay = tmp_path / "prod-cluster"
    overlay.mkdir()
    text = (OVERLAY / "kustomization.yaml").read_text()
    (overlay / "kustomization.yaml").write_text(text)
    assert rules()["argocd"](dataclasses.replace(ctx, overlay_dir=overlay)) == []
    (overlay / "kustomization.yaml").write_text(text.replace("forkcast.io/synced-by: forkcast-prod", "{}"))
    problems = rules()["argocd"](dataclasses.replace(ctx, overlay_dir=overlay))
    assert [p.message for p in problems] == ["no Argo CD Application in deploy/argocd syncs this overlay"]


def test_the_overlay_passes_strict_schemas(docs: list[Doc]) -> None:
    """The core kinds here; the CRD kinds by ../shared/tools/validate-manifests in test_manifests.py
    (test_crd_kinds_pass_upstream_schemas, which runs it on this overlay too)."""
    core = [d for d in docs if not d["apiVersion"].startswith(("argoproj.io/", "monitoring.coreos.com/"))]
    assert {"Job", "PodDisruptionBudget", "StatefulSet"} <= {d["kind"] for d in core}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def wave(doc: Doc) -> int:
    """The Argo CD sync wave of ``doc`` (0 without the annotation)."""
    return int((doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_the_bootstrap_job_runs_with_the_nodes_before_the_wave_of_the_features_consumers(
    docs: list[Doc],
) -> None:
    job = find(docs, "Job", "redis-cluster-bootstrap")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    # Argo CD applies a wave once every resource of the earlier waves is healthy: the Job must run in a wave before
    # every features consumer (inference is not ready until the features, loaded into a formed Cluster, are live),
    # together with the StatefulSet whose nodes it forms.
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    assert wave(job) == wave(statefulset) == -1
    consumers = [find(docs, "Rollout", "inference"), find(docs, "Deployment", "gateway")]
    consumers.append(find(docs, "Deployment", "drift"))
    assert all(wave(c) > wave(job) for c in consumers), [(c["metadata"]["name"], wave(c)) for c in consumers]
    # What the nodes and the Job need to start is applied no later than they are: the ConfigMap, the
    # ServiceAccounts, the headless Service their names live under, the NetworkPolicies admitting the bus.
    template = statefulset["spec"]["template"]["spec"]
    configmaps = {v["configMap"]["name"] for v in template["volumes"] if "configMap" in v}
    needed = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] in configmaps]
    needed += [find(docs, "ServiceAccount", template["serviceAccountName"])]
    needed += [find(docs, "ServiceAccount", job["spec"]["template"]["spec"]["serviceAccountName"])]
    needed += [find(docs, "Service", statefulset["spec"]["serviceName"])]
    needed += [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"].startswith("redis-cluster")]
    assert len(needed) == 7 and all(wave(d) <= -1 for d in needed), [
        (d["kind"], d["metadata"]["name"], wave(d)) for d in needed
    ]


def test_the_headless_service_names_nodes_that_are_not_ready(
    contexts: dict[str, Context], docs: list[Doc]
) -> None:
    # A replica in full resync is not ready (the readiness probe), yet its announced name must resolve: the Job,
    # the nodes and a person's CLUSTER MEET reach nodes by name. Service redis (clients' first contact) and prod's
    # headless Service keep ready pods only.
    assert find(docs, "Service", "redis-headless")["spec"]["publishNotReadyAddresses"] is True
    assert "publishNotReadyAddresses" not in find(docs, "Service", "redis")["spec"]
    prod = list(contexts["prod"].docs)
    assert "publishNotReadyAddresses" not in find(prod, "Service", "redis-headless")["spec"]


MIB = 1024**2
UNITS = {"": 1, "b": 1, "kb": 1024, "mb": MIB, "gb": 1024**3, "ki": 1024, "mi": MIB, "gi": 1024**3}


def size(text: str) -> int:
    """A redis.conf size (1mb = 1024*1024 bytes, redis.conf "Units") or a Kubernetes quantity (2Gi)."""
    found = re.fullmatch(r"(\d+)([a-zA-Z]*)", text.strip())
    assert found is not None, text
    return int(found.group(1)) * UNITS[found.group(2).lower()]


def node_memory_need(docs: list[Doc]) -> tuple[float, int]:
    """A master's worst case in MiB (a fork for a replica's full resync: the data copied on write, with 10 %
    fragmentation, client/AOF buffers 64 MiB, the replica's output buffer at its hard limit, a 1 MiB backlog),
    from the rendered redis.conf then cluster.conf (the order of the --include; the last directive wins), and the
    container's limit in MiB."""
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    (container,) = [c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    config = redis_acl.config_maps(docs, "redis-cluster")["config"]
    conf = redis_acl.directives(config)
    replica_limit = "256mb"  # Redis 7.0's default hard limit (its self-documented redis.conf)
    for line in str(config["data"]["cluster.conf"]).splitlines():
        if line.startswith("maxmemory "):
            conf["maxmemory"] = line.split()[1]
        if line.startswith("client-output-buffer-limit replica "):
            replica_limit = line.split()[2]
    need = 2 * size(conf["maxmemory"]) * 1.1 + 64 * MIB + size(replica_limit) + 1 * MIB
    return need / MIB, size(container["resources"]["limits"]["memory"]) // MIB


def test_a_master_in_full_resync_fits_its_memory_limit(docs: list[Doc]) -> None:
    need, limit = node_memory_need(docs)
    assert (round(need), limit) == (1889, 2048)
    # Twin: the replica buffer left at Redis's default (256 MB) and features.conf's 900mb would not fit.
    edited = copy.deepcopy(docs)
    config = redis_acl.config_maps(edited, "redis-cluster")["config"]
    config["data"]["cluster.conf"] = "\n".join(
        line
        for line in str(config["data"]["cluster.conf"]).splitlines()
        if not line.startswith(("maxmemory ", "client-output-buffer-limit "))
    )
    need, limit = node_memory_need(edited)
    assert round(need) == 2301 and need > limit


# --- the rendered pods, run --------------------------------------------------------------------------------------


@dataclass
class Pod:
    """One rendered pod's volumes on disk: volume name -> local folder, and mount path -> volume, per container."""

    root: Path
    spec: dict[str, Any]
    volumes: dict[str, Path]

    def local(self, container: dict[str, Any], path: str) -> str:
        """``path`` as seen by ``container``, moved to the local folder of the volume mounted there."""
        mounts = sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        for mount in mounts:
            prefix = mount["mountPath"].rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return str(self.volumes[mount["name"]]) + path[len(prefix) :]
        return path

    def run_init(self, name: str) -> None:
        (container,) = [c for c in self.spec["initContainers"] if c["name"] == name]
        assert container["command"] == ["sh", "-c"]
        env = {v["name"]: self.local(container, str(v["value"])) for v in container["env"]}
        proc = subprocess.run(
            ["sh", "-c", container["args"][0]],
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert proc.returncode == 0, f"init container {name}: {proc.stderr}"


def materialise(
    root: Path, spec: dict[str, Any], docs: list[Doc], secret_files: dict[str, dict[str, str]]
) -> Pod:
    """The pod's volumes as the kubelet would mount them: ConfigMap items from the render (mount paths inside
    them rewritten to the local folders, so `dir /data` and `aclfile ...` point here), Secrets from
    ``secret_files``, an empty folder for each emptyDir and volume claim."""
    configmaps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    volumes: dict[str, Path] = {}
    for volume in spec["volumes"]:
        volumes[volume["name"]] = root / volume["name"]
        volumes[volume["name"]].mkdir(parents=True)
    pod = Pod(root, spec, volumes)
    claims = [t["metadata"]["name"] for t in spec.get("_claims", [])]
    for claim in claims:
        volumes[claim] = root / claim
        volumes[claim].mkdir(parents=True)
    (server,) = [c for c in spec["containers"] if c["name"] == "redis"]
    for volume in spec["volumes"]:
        target = volumes[volume["name"]]
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            for item in volume["configMap"]["items"]:
                # Each absolute path once (a moved path lies under tmp_path, itself under /tmp, a mount).
                text = re.sub(r"(?<=\s)/\S+", lambda m: pod.local(server, m.group(0)), str(data[item["key"]]))
                (target / item["path"]).write_text(text)
        elif "secret" in volume:
            for key, value in secret_files[volume["secret"]["secretName"]].items():
                (target / key).write_text(value + "\n")  # as `kubectl create secret --from-file` keeps it
    return pod


@dataclass
class Node:
    pod: Pod
    server: RedisServer
    hostname: str
    passwords: dict[str, str]  # every ACL user's password (one set for the whole Cluster)


@pytest.fixture
def cluster(tmp_path: Path, docs: list[Doc]) -> Iterator[list[Node]]:
    """The 6 rendered pods of StatefulSet redis-cluster, run as local redis-servers (not yet a Cluster)."""
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    template = copy.deepcopy(statefulset["spec"]["template"]["spec"])
    template["_claims"] = statefulset["spec"]["volumeClaimTemplates"]
    users = ("gateway", "inference", "drift", "loader", "exporter", "replication", "cluster-admin")
    passwords = {u: secrets.token_hex(16) for u in users}
    hashes = {u: redis_acl.password_hash(passwords[u]) for u in users}
    secret_files = {
        "forkcast-redis-acl": hashes,
        "forkcast-redis-replication": {"password": passwords["replication"]},
    }
    config = redis_acl.config_maps(docs, "redis-cluster")["config"]
    ports = _cluster_ports(int(statefulset["spec"]["replicas"]))
    nodes: list[Node] = []
    try:
        for ordinal, port in enumerate(ports):
            pod = materialise(tmp_path / f"redis-cluster-{ordinal}", template, docs, secret_files)
            # The init containers in their order: join the ACL templates, then fill the hashes.
            assert [c["name"] for c in template["initContainers"]] == ["cluster-acl", "acl"]
            for init in template["initContainers"]:
                pod.run_init(init["name"])
            (container,) = [c for c in template["containers"] if c["name"] == "redis"]
            fields = {"POD_NAME": f"redis-cluster-{ordinal}", "POD_NAMESPACE": NAMESPACE}
            argv = []
            for arg in container["command"]:
                for name, value in fields.items():
                    arg = arg.replace(f"$({name})", value)
                argv.append(pod.local(container, arg))
            assert argv[0] in REDIS_SERVER.names  # the program the local server runs too
            hostname = argv[argv.index("--cluster-announce-hostname") + 1]
            # The config file (the first argument) as an include, then only the port moved: every other
            # directive, path and flag is the rendered one.
            conf = ["--include", argv[1], *argv[2:], "--port", str(port)]
            server = RedisServer(
                pod.volumes["data"],
                port=port,
                conf=conf,
                aclfile=Path(pod.local(container, redis_acl.directives(config)["aclfile"])),
                username="cluster-admin",
                password=passwords["cluster-admin"],
            )
            nodes.append(Node(pod, server.start(), hostname, passwords))
        yield nodes
    finally:
        for node in nodes:
            node.server.stop()


def bootstrap(
    docs: list[Doc], nodes: list[Node], password: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """The rendered Job's script, its node names mapped to the local servers' addresses, its Secret volume written
    under the first node's folder (where the kubelet would mount it)."""
    job = find(docs, "Job", "redis-cluster-bootstrap")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "forkcast-redis-cluster-admin"
    secret_dir = nodes[0].pod.root.parent / "bootstrap-secret"
    secret_dir.mkdir(exist_ok=True)
    (secret_dir / "password").write_text(password + "\n")
    rendered = {v["name"]: v for v in container["env"]}
    names = rendered["CLUSTER_NODES"]["value"].split()
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    service = statefulset["spec"]["serviceName"]
    assert names == [f"redis-cluster-{i}.{service}:6379" for i in range(statefulset["spec"]["replicas"])]
    addresses = {name: f"127.0.0.1:{node.server.port}" for name, node in zip(names, nodes, strict=True)}
    variables = {
        "CLUSTER_NODES": " ".join(addresses[n] for n in names),
        "CLUSTER_REPLICAS": rendered["CLUSTER_REPLICAS"]["value"],
        "WAIT_S": rendered["WAIT_S"]["value"],
        "ADMIN_PASSWORD_FILE": rendered["ADMIN_PASSWORD_FILE"]["value"].replace(
            mount["mountPath"], str(secret_dir), 1
        ),
    } | env
    # The password reaches redis-cli from the file only: no variable of the pod holds it.
    assert not any(secret_key(v) for v in rendered.values())
    assert rendered["ADMIN_PASSWORD_FILE"]["value"].startswith(mount["mountPath"] + "/")
    cli = shutil.which("redis-cli")
    assert cli is not None
    return subprocess.run(
        [*container["command"], container["args"][0]],
        env={"PATH": f"{Path(cli).parent}:/usr/bin:/bin", **variables},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def as_user(node: Node, user: str) -> redis.Redis:
    return redis.Redis(
        port=node.server.port, username=user, password=node.passwords[user], decode_responses=True
    )


def admin(node: Node) -> redis.Redis:
    return as_user(node, "cluster-admin")


def slot_map(node: Node) -> list[tuple[int, int, list[str]]]:
    """CLUSTER SLOTS as a Cluster client reads it (user inference): each range's first and last slot and the
    endpoints of its master, then its replicas."""
    reply = as_user(node, "inference").execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    return [(int(r[0]), int(r[1]), [str(n[0]) for n in r[2:]]) for r in reply]


def cluster_command(node: Node, user: str, *args: str) -> str:
    """``args`` run as ``user``: the reply, or the error's text (a refusal names the command refused)."""
    try:
        return str(as_user(node, user).execute_command(*args))  # type: ignore[no-untyped-call]
    except redis.ResponseError as err:
        return f"error: {err}"


def readiness(docs: list[Doc], node: Node, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The rendered redis container's readiness probe run against ``node``: its redis-cli reaches the node's port
    (the pod's localhost:6379) through a wrapper first on PATH, and the probe's own credentials (REDISCLI_AUTH of
    the container, Secret forkcast-redis-exporter) are user exporter's."""
    container = find(docs, "StatefulSet", "redis-cluster")["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v for v in container["env"]}
    assert secret_key(env["REDISCLI_AUTH"]) == ("forkcast-redis-exporter", "password")
    cli = shutil.which("redis-cli")
    assert cli is not None
    wrapper = tmp_path / f"probe-{node.server.port}"
    wrapper.mkdir(exist_ok=True)
    (wrapper / "redis-cli").write_text(f'#!/bin/sh\nexec {cli} -p {node.server.port} "$@"\n')
    (wrapper / "redis-cli").chmod(0o755)
    return subprocess.run(
        container["readinessProbe"]["exec"]["command"],
        env={"PATH": f"{wrapper}:/usr/bin:/bin", "REDISCLI_AUTH": node.passwords["exporter"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def replicas(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if admin(n).info("replication")["role"] == "slave"]


def wait_links_up(nodes: list[Node]) -> None:
    deadline = time.monotonic() + 20
    while True:
        links = [admin(n).info("replication").get("master_link_status") for n in replicas(nodes)]
        if links == ["up"] * 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert links == ["up"] * 3


def test_the_rendered_statefulset_and_job_form_3_masters_with_1_replica_each(
    docs: list[Doc], cluster: list[Node], tmp_path: Path
) -> None:
    password = cluster[0].server.password
    assert password is not None
    # Before the Cluster forms every node is a master: ready on PING (the StatefulSet's wave can complete).
    assert [readiness(docs, n, tmp_path).returncode for n in cluster] == [0] * 6
    first = bootstrap(docs, cluster, password)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no node has joined a Cluster yet: creating it (6 nodes, 1 replica(s) per master)" in first.stdout
    assert "the Cluster is formed (created by this run: yes)" in first.stdout
    # `--cluster check` ran to its end with user cluster-admin's commands (DBSIZE included).
    assert "[OK] All 16384 slots covered." in first.stdout and "NOPERM" not in first.stdout + first.stderr
    for node in cluster:
        info = admin(node).execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info and "cluster_size:3" in info
    # Every replica replicates: it authenticated to its master as user replication (masterauth from the init
    # container), over the client port; and is then ready.
    wait_links_up(cluster)
    layout = slot_map(cluster[0])
    assert len(layout) == 3
    announced = {node.hostname for node in cluster}
    # Fully qualified: fewer dots than ndots (5) would first be tried under every search domain.
    assert announced == {f"redis-cluster-{i}.redis-headless.{NAMESPACE}.svc.cluster.local" for i in range(6)}
    # Clients are sent to the name each pod announces, not to its address (CLUSTER SLOTS lists a replica only
    # once gossip carries a non-zero replication offset for it, so the pairs are read from CLUSTER NODES).
    assert all(set(endpoints) <= announced for _, _, endpoints in layout), layout
    assert sum(last - first + 1 for first, last, _ in layout) == 16384
    nodes = [line.split() for line in str(admin(cluster[0]).execute_command("CLUSTER", "NODES")).splitlines()]  # type: ignore[no-untyped-call]
    masters = {n[0] for n in nodes if "master" in n[2].split(",")}
    assert len(masters) == 3 and sorted(n[3] for n in nodes if "slave" in n[2].split(",")) == sorted(masters)
    assert [readiness(docs, n, tmp_path).returncode for n in cluster] == [0] * 6
    # The exporter reads CLUSTER INFO (its redis_cluster_* series) and nothing else of CLUSTER.
    assert "cluster_state:ok" in cluster_command(cluster[0], "exporter", "CLUSTER", "INFO")
    assert cluster_command(cluster[0], "exporter", "CLUSTER", "NODES") == (
        "error: this user has no permissions to run the 'cluster|nodes' command"
    )
    # cluster-admin forms and checks, and can remove nothing: no slot moved or dropped, no node forgotten, reset or
    # taken over (those are a person's, with the break-glass credential: docs/operations.md).
    node_id = str(admin(cluster[1]).execute_command("CLUSTER", "MYID"))  # type: ignore[no-untyped-call]
    refused = {
        "cluster|forget": ("CLUSTER", "FORGET", node_id),
        "cluster|delslots": ("CLUSTER", "DELSLOTS", "0"),
        "cluster|setslot": ("CLUSTER", "SETSLOT", "0", "STABLE"),
        "cluster|failover": ("CLUSTER", "FAILOVER", "TAKEOVER"),
        "cluster|reset": ("CLUSTER", "RESET", "SOFT"),
        "flushall": ("FLUSHALL",),
    }
    for name, args in refused.items():
        assert cluster_command(cluster[0], "cluster-admin", *args) == (
            f"error: this user has no permissions to run the '{name}' command"
        )
    # Idempotent: the next sync's run finds it formed and changes nothing.
    before = admin(cluster[0]).execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    again = bootstrap(docs, cluster, password)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created by this run: no" in again.stdout and "creating it" not in again.stdout
    after = admin(cluster[0]).execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    ids = sorted((line.split()[0], line.split()[-1]) for line in before.splitlines())
    assert ids == sorted((line.split()[0], line.split()[-1]) for line in after.splitlines())


def test_the_bootstrap_job_leaves_a_half_formed_cluster_to_a_person(
    docs: list[Doc], cluster: list[Node]
) -> None:
    password = cluster[0].server.password
    assert password is not None
    # Three nodes already met each other (a Cluster of another shape, or volumes lost on the other three).
    first, *rest = cluster[:3]
    for node in rest:
        admin(first).execute_command("CLUSTER", "MEET", "127.0.0.1", str(node.server.port))  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 10
    while "cluster_known_nodes:3" not in admin(first).execute_command("CLUSTER", "INFO"):  # type: ignore[no-untyped-call]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc = bootstrap(docs, cluster, password, WAIT_S="2")
    assert proc.returncode == 1
    assert "the Cluster is neither formed nor new after 2s, left as it is" in proc.stderr
    assert "creating it" not in proc.stdout
    for node in cluster[3:]:
        assert "cluster_known_nodes:1" in admin(node).execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]


def form(docs: list[Doc], nodes: list[Node]) -> None:
    """The rendered Job run once on fresh nodes, then every replica's link up."""
    password = nodes[0].server.password
    assert password is not None
    proc = bootstrap(docs, nodes, password)
    assert proc.returncode == 0 and "created by this run: yes" in proc.stdout, proc.stdout + proc.stderr
    wait_links_up(nodes)


def test_twin_a_replica_without_its_master_is_not_ready(
    docs: list[Doc], cluster: list[Node], tmp_path: Path
) -> None:
    # A replica answers PING with its master gone (or a full resync running): counted ready, the PDB and the
    # rolling update would let its shard lose its last copy. The rendered probe says not ready, for that reason.
    form(docs, cluster)
    replica = replicas(cluster)[0]
    master_port = int(admin(replica).info("replication")["master_port"])
    (master,) = [n for n in cluster if n.server.port == master_port]
    assert readiness(docs, replica, tmp_path).returncode == 0
    master.server.stop()
    deadline = time.monotonic() + 10
    while admin(replica).info("replication").get("master_link_status") != "down":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert admin(replica).ping()
    assert readiness(docs, replica, tmp_path).returncode == 1


def test_a_replica_replaced_by_the_runbook_counts_as_formed(docs: list[Doc], cluster: list[Node]) -> None:
    # A replica's volume lost: the pod restarts as a fresh node (new id), the runbook's add-node (docs/
    # operations.md, run with user cluster-admin) makes it a replica again, and the dead id stays known, flagged
    # fail, until CLUSTER FORGET: 7 known nodes, 6 of them healthy. The next sync's Job must find that formed.
    form(docs, cluster)
    lost = replicas(cluster)[0]
    old_id = str(admin(lost).execute_command("CLUSTER", "MYID"))  # type: ignore[no-untyped-call]
    lost.server.stop()
    data = lost.pod.volumes["data"]
    (data / "nodes.conf").unlink()
    shutil.rmtree(data / "appendonlydir", ignore_errors=True)
    lost.server.start()
    survivor = next(n for n in cluster if n is not lost)
    deadline = time.monotonic() + 30
    while True:
        lines = str(admin(survivor).execute_command("CLUSTER", "NODES")).splitlines()  # type: ignore[no-untyped-call]
        (flags,) = [line.split()[2].split(",") for line in lines if line.startswith(old_id + " ")]
        # Reached at its old address by the new node, the old id loses it (noaddr); at a new address (a
        # rescheduled pod) it stops answering: fail.
        if {"fail", "noaddr"} & set(flags):
            break
        assert time.monotonic() < deadline, f"the lost node is still {flags}"
        time.sleep(0.2)
    cli = shutil.which("redis-cli")
    assert cli is not None
    added = subprocess.run(
        [cli, "--user", "cluster-admin", "--no-auth-warning", "--cluster", "add-node",
         f"127.0.0.1:{lost.server.port}", f"127.0.0.1:{survivor.server.port}", "--cluster-slave"],
        env={"REDISCLI_AUTH": lost.passwords["cluster-admin"]},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0 and "[OK] New node added correctly." in added.stdout, (
        added.stdout + added.stderr
    )
    wait_links_up(cluster)
    password = survivor.server.password
    assert password is not None
    proc = bootstrap(docs, cluster, password, WAIT_S="20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the Cluster is formed (created by this run: no)" in proc.stdout
    # Every node sees 6 healthy nodes; the survivors still know the dead id (7 known), the new node never met it.
    assert proc.stdout.count("/healthy:6/") == 6 and proc.stdout.count("known:7/healthy:6/") == 5, proc.stdout


# --- the Cluster's alerts (manifests/observability/prometheus-rules.yaml), run by promtool ---------------------

CLUSTER_ALERTS = ("RedisClusterStateNotOk", "RedisClusterSlotsFailing", "RedisClusterMasterWithoutReplica")
NODE = 'namespace="forkcast", pod="redis-cluster-0", job="forkcast/redis", instance="10.0.0.7:9121"'
NODE_LABELS = {
    "namespace": "forkcast",
    "pod": "redis-cluster-0",
    "job": "forkcast/redis",
    "instance": "10.0.0.7:9121",
}


def cluster_rules() -> list[dict[str, Any]]:
    shared = render(ROOT / "manifests" / "observability").docs
    found = [
        r
        for d in shared
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") in CLUSTER_ALERTS
    ]
    assert sorted(r["alert"] for r in found) == sorted(CLUSTER_ALERTS)
    return found


def promtool_alerts(
    tmp_path: Path, series: dict[str, str], alert: str, at: str, expected: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """promtool's unit test of ``alert`` at ``at`` on ``series`` (series -> values, 1-minute steps)."""
    return alert_rule_test(tmp_path, cluster_rules(), series, alert, at, expected)


def fired(severity: str, summary: str, **labels: str) -> list[dict[str, Any]]:
    return [
        {"exp_labels": NODE_LABELS | labels | {"severity": severity}, "exp_annotations": {"summary": summary}}
    ]


@pytest.mark.parametrize(
    ("alert", "series", "at", "expected", "why"),
    [
        (
            "RedisClusterStateNotOk",
            {f"redis_cluster_state{{{NODE}}}": "0x10"},
            "5m",
            fired(
                "page",
                "Redis Cluster node redis-cluster-0 says cluster_state:fail: it refuses every command (slots "
                "uncovered or the majority of masters unreachable)",
            ),
            "cluster_state:fail (0) for over a minute",
        ),
        ("RedisClusterStateNotOk", {f"redis_cluster_state{{{NODE}}}": "1x10"}, "5m", [], "cluster_state:ok"),
        (
            "RedisClusterSlotsFailing",
            {
                f"redis_cluster_slots_fail{{{NODE}}}": "0x10",
                f"redis_cluster_slots_pfail{{{NODE}}}": "5461x10",
            },
            "5m",
            fired("page", "Redis Cluster node redis-cluster-0 sees 5461 slots served by a failing master"),
            "a shard's slots suspected failing for 5 minutes: no failover happened",
        ),
        (
            "RedisClusterSlotsFailing",
            {
                f"redis_cluster_slots_fail{{{NODE}}}": "0x10",
                f"redis_cluster_slots_pfail{{{NODE}}}": "5461 0x10",
            },
            "5m",
            [],
            "suspected for one scrape, then failed over",
        ),
        (
            "RedisClusterMasterWithoutReplica",
            {
                f"redis_connected_slaves{{{NODE}}}": "0x30",
                f'redis_instance_info{{{NODE}, role="master", redis_version="7.4.2"}}': "1x30",
                f"redis_cluster_state{{{NODE}}}": "1x30",
            },
            "20m",
            fired(
                "ticket",
                "Redis Cluster master redis-cluster-0 has no replica: its slots have a single copy, and losing it "
                "stops the Cluster",
            ),
            "a Cluster master without a replica for 20 minutes",
        ),
        (
            "RedisClusterMasterWithoutReplica",
            {
                f"redis_connected_slaves{{{NODE}}}": "0x30",
                f'redis_instance_info{{{NODE}, role="master", redis_version="7.4.2"}}': "1x30",
            },
            "20m",
            [],
            "a standalone Redis (no CLUSTER INFO series) has no replica by design",
        ),
        (
            "RedisClusterMasterWithoutReplica",
            {
                f"redis_connected_slaves{{{NODE}}}": "0x30",
                f'redis_instance_info{{{NODE}, role="slave", redis_version="7.4.2"}}': "1x30",
                f"redis_cluster_state{{{NODE}}}": "1x30",
            },
            "20m",
            [],
            "a replica has no replicas of its own",
        ),
    ],
)
@pytest.mark.usefixtures("promtool")
def test_the_cluster_alerts_fire_on_their_cause_only(
    tmp_path: Path, alert: str, series: dict[str, str], at: str, expected: list[dict[str, Any]], why: str
) -> None:
    proc = promtool_alerts(tmp_path, series, alert, at, expected)
    assert proc.returncode == 0, f"{why}: {proc.stdout}{proc.stderr}"
