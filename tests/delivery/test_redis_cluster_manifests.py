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
from forkcast_delivery.render import Doc

from forkcast_devservers.binaries import REDIS_SERVER
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


def test_the_bootstrap_job_runs_as_an_argo_cd_sync_hook_after_the_nodes(docs: list[Doc]) -> None:
    job = find(docs, "Job", "redis-cluster-bootstrap")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    # The StatefulSet is in wave 0 (no annotation); the Job after it.
    assert int(annotations["argocd.argoproj.io/sync-wave"]) > 0
    assert "argocd.argoproj.io/sync-wave" not in (
        find(docs, "StatefulSet", "redis-cluster")["metadata"].get("annotations") or {}
    )


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


@pytest.fixture
def cluster(tmp_path: Path, docs: list[Doc]) -> Iterator[list[Node]]:
    """The 6 rendered pods of StatefulSet redis-cluster, run as local redis-servers (not yet a Cluster)."""
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    template = copy.deepcopy(statefulset["spec"]["template"]["spec"])
    template["_claims"] = statefulset["spec"]["volumeClaimTemplates"]
    passwords = {"replication": secrets.token_hex(16), "cluster-admin": secrets.token_hex(16)}
    users = ("gateway", "inference", "drift", "loader", "exporter", *passwords)
    hashes = {u: redis_acl.password_hash(passwords.get(u, secrets.token_hex(16))) for u in users}
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
            nodes.append(Node(pod, server.start(), hostname))
        yield nodes
    finally:
        for node in nodes:
            node.server.stop()


def bootstrap(
    docs: list[Doc], nodes: list[Node], password: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """The rendered Job's script, its node names mapped to the local servers' addresses."""
    job = find(docs, "Job", "redis-cluster-bootstrap")
    (container,) = job["spec"]["template"]["spec"]["containers"]
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
        "REDISCLI_AUTH": password,
    } | env
    assert secret_key(rendered["REDISCLI_AUTH"]) == ("forkcast-redis-cluster-admin", "password")
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


def admin(node: Node) -> redis.Redis:
    return redis.Redis(
        port=node.server.port, username="cluster-admin", password=node.server.password, decode_responses=True
    )


def shards(node: Node) -> list[dict[str, Any]]:
    """CLUSTER SHARDS, as redis-py parses it: one dict per shard with its slot ranges and nodes."""
    reply: list[dict[str, Any]] = admin(node).execute_command("CLUSTER", "SHARDS")  # type: ignore[no-untyped-call]
    return reply


def test_the_rendered_statefulset_and_job_form_3_masters_with_1_replica_each(
    docs: list[Doc], cluster: list[Node]
) -> None:
    password = cluster[0].server.password
    assert password is not None
    first = bootstrap(docs, cluster, password)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no node has joined a Cluster yet: creating it (6 nodes, 1 replica(s) per master)" in first.stdout
    assert "the Cluster is formed (created by this run: yes)" in first.stdout
    for node in cluster:
        info = admin(node).execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info and "cluster_size:3" in info
    layout = shards(cluster[0])
    assert len(layout) == 3
    announced = {node.hostname for node in cluster}
    assert announced == {f"redis-cluster-{i}.redis-headless.{NAMESPACE}.svc" for i in range(6)}
    for shard in layout:
        roles = sorted(n["role"] for n in shard["nodes"])
        assert roles == ["master", "replica"], shard
        # Clients are sent to the name each pod announces, not to its address.
        assert {n["endpoint"] for n in shard["nodes"]} <= announced and all(
            n["endpoint"] == n["hostname"] for n in shard["nodes"]
        )
    assert sum(s["slots"][1] - s["slots"][0] + 1 for s in layout) == 16384
    # Every replica replicates: it authenticated to its master as user replication (masterauth from the init
    # container), over the client port.
    deadline = time.monotonic() + 20
    while True:
        links = [
            admin(n).info("replication").get("master_link_status")
            for n in cluster
            if admin(n).info("replication")["role"] == "slave"
        ]
        if links == ["up"] * 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert links == ["up"] * 3
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
