"""The rehearsal with real processes: ``rehearse`` runs one canary ``Update`` of the rendered Rollout to its end.

It runs on the local platform of ``supervisor.up``: the render's StatefulSets (the features and the events Redis)
are the platform's components, started by ``up`` with the rendered ACL users, and every process of the rehearsal
gets the credentials its rendered pod gets (its plan's environment, with the local Secrets' passwords): the stable
and canary inference pods, the gateway and the online-AUC job (``Pod`` with their ``ContainerPlan``), the feature
load as the loader user. The feedback simulator stands in for the app's clients with the rights of the rendered
``online-auc`` user (read the predictions) and ``gateway`` user (write the feedback), as ``clicks.Clicks`` does for
the end-to-end drill; it does not post through the gateway's /feedback, which takes one restaurant per request: the
traffic's ~40 requests/s of 100-1000 restaurants each would be thousands of POSTs a second on two cores, above the
gateway's per-key /feedback limit too (FORKCAST_FEEDBACK_RATE_PER_S, 200 by default). Its Prometheus is configured
by ``observability.file_sd_prometheus_config`` from the render: the rendered PrometheusRule as the rule file and one
job per rendered monitor with that monitor's relabelings, its targets the rehearsal's pods with the meta labels
Kubernetes SD would give them (``scrape``). A Redis user, or a monitor relabeling the labels the AnalysisTemplates
select by, missing from the manifests stops the rehearsal naming it.

What the platform cannot give stays here: the platform runs one pod per workload, so the two ``PodSet``s (the
Rollout's ReplicaSets, scaled as ``CanaryController`` decides) are the rehearsal's, and so are the pods that must
see them: a gateway (the rendered plan, its upstream the headless Service resolved by ``ServiceDns``, a stub
standing in for the cluster's DNS, CoreDNS, which no rendered workload provides), an online-AUC job (the
rendered plan, compressed, on its own consumer group so that a platform job on the same stream, as in the
end-to-end drill, does not split the events with it), the Prometheus above (file_sd: the pods come and go), and
the clients' API keys (their own key file in the format of Secret forkcast-api-keys). This loop probes the pods,
hands the ready counts to the controller, scales the ``PodSet``s to the replicas it returns, publishes the ready
pods in DNS and the live ones to Prometheus, and measures the templates' own queries against that Prometheus.
Every duration the cluster would wait (pauses, analysis intervals, the progress deadline, probe periods, scrapes,
the gateway's DNS refresh, the online-AUC job's windows) is divided by ``time_scale``; PromQL range selectors stay
as the templates write them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import Prometheus
from forkcast_gateway.auth import hash_key
from forkcast_local import observability
from forkcast_local.clicks import Clicks
from forkcast_local.config import PlatformConfig
from forkcast_local.plan import ContainerPlan
from forkcast_local.pods import Pod
from forkcast_local.rehearsal.controller import PAUSE_INCONCLUSIVE, CanaryController, Status, Verdict
from forkcast_local.rehearsal.dns import ServiceDns
from forkcast_local.rehearsal.podsets import PodSet, Release, addresses
from forkcast_local.rehearsal.prometheus import PrometheusQuery
from forkcast_local.rehearsal.scrape import ScrapedPod, file_sd_entries, write_targets
from forkcast_local.rehearsal.spec import RolloutSpec
from forkcast_local.supervisor import Platform, up
from forkcast_monitoring.manifest_config import from_objects, render_observability

Doc = dict[str, Any]
LOOP_S = 0.1
# Cluster durations the rehearsal compresses besides the Rollout's own (seconds at cluster speed).
SCRAPE_S = 15.0  # the PodMonitors' interval
DNS_REFRESH_S = 2.0  # the gateway's FORKCAST_DNS_REFRESH_S default
AUC_COMPUTE_S = 5.0  # the online-AUC job's FORKCAST_AUC_COMPUTE_EVERY_S default
# Prometheus' rate() needs two samples of a new series: the scrape is never slower than this once compressed.
# How long the clients keep calling once the end has propagated: the window `served_after_end` counts.
AFTER_END_S = 1.5
# Requests in flight when the gateway drops an endpoint still finish there: 10 s client timeout, ~ms in practice.
IN_FLIGHT_S = 0.5
MAX_SCRAPE_S = 0.5
MIN_SCRAPE_S = 0.25
# The rehearsal's online-AUC job reads the events on a consumer group of its own (see the module docstring).
AUC_GROUP = "online-auc-rehearsal"
# How long the stable pods' series may take to appear in Prometheus with the labels the templates select by.
LABELS_TIMEOUT_S = 30.0
# The Redis URL variables of a rendered plan, each checked against the platform's Redis before anything runs.
REDIS_VARIABLES = ("REDIS_URL", "FORKCAST_EVENTS_REDIS_URL")


class RehearsalError(RuntimeError):
    """The rendered platform lacks what the rehearsal needs (the message names the user, monitor or label)."""


@dataclass
class Outcome:
    """How the update ended, with what the drills assert: the last status (phase, message, verdict, weight), the
    releases that answered in all and after the end had propagated, and the client's failures.

    "After the end" starts once the pods match the final status (every wanted pod ready, the others gone from the
    Service) and one gateway DNS refresh period plus an in-flight margin has passed: as in a cluster, where a
    scaled-down pod leaves the endpoints first and clients see that only at their next resolution, requests sent in
    that window may still reach the old pods (CI once counted one canary answer 0.1 s after the abort decision).
    """

    status: Status
    served: Counter[str]
    served_after_end: Counter[str]
    failed: int
    sent: int
    seconds: float
    events: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict | None:
        return self.status.verdict


@dataclass(frozen=True)
class Stack:
    """What the rendered platform hands the rehearsal: the gateway's and the online-AUC job's plans, the render,
    and the platform's config (``up`` of it runs the render's StatefulSets the rehearsal's pods connect to)."""

    gateway: ContainerPlan
    online_auc: ContainerPlan
    docs: list[Doc]
    config: PlatformConfig


def headless_service(docs: list[Doc], spec: RolloutSpec) -> str:
    """The name of the headless Service selecting the Rollout's pods (what the gateway resolves)."""
    labels = spec.pod_template["metadata"].get("labels", {})
    for doc in docs:
        if doc.get("kind") != "Service" or doc["spec"].get("clusterIP") != "None":
            continue
        selector = doc["spec"].get("selector") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return str(doc["metadata"]["name"])
    raise ValueError(f"the render has no headless Service selecting the pods of Rollout {spec.name}")


def _template_labels(docs: list[Doc], workload: str) -> dict[str, str]:
    for doc in docs:
        if doc["metadata"]["name"] == workload and "template" in doc.get("spec", {}):
            return dict(doc["spec"]["template"]["metadata"].get("labels") or {})
    raise ValueError(f"the render has no workload {workload}")


@dataclass(frozen=True)
class Update:
    """What to rehearse: the update of ``stable`` to ``canary`` under the rendered ``spec``, with the features of
    ``data``, the client ``traffic`` (a ``traffic.Traffic``) and every cluster duration divided by ``time_scale``;
    ``work`` holds the logs. ``world_drift`` is the feedback simulator's --drift (the end-to-end drill's canary faces
    the drifted world)."""

    stack: Stack
    spec: RolloutSpec
    stable: Release
    canary: Release
    data: Path
    work: Path
    time_scale: float
    traffic: Any
    world_drift: float = 0.0


class Rehearsal:
    """One canary update, from the stable release fully available to Healthy, Paused or Degraded."""

    def __init__(self, update: Update) -> None:
        self.world_drift = update.world_drift
        self.stack, self.spec = update.stack, update.spec
        self.stable_release, self.canary_release = update.stable, update.canary
        self.data, self.work, self.scale, self.traffic = (
            update.data,
            update.work,
            update.time_scale,
            update.traffic,
        )
        self.servers: list[Any] = []
        self.pods: list[Pod] = []
        self.log: list[str] = []
        self.port = free_port()
        hosts = addresses(f"{self.work}{os.getpid()}{time.time()}")
        self.stable = PodSet(update.stable, self.port, hosts, self.work / "pods", self.scale)
        self.canary = PodSet(update.canary, self.port, hosts, self.work / "pods", self.scale)
        self._targets_seen: tuple[str, ...] = ()

    def say(self, text: str) -> None:
        self.log.append(text)
        print(f"[rehearsal] {text}", flush=True)

    # -- set-up --------------------------------------------------------------------------------------------------
    def _spawn_pod(self, name: str, plan: ContainerPlan) -> Pod:
        pod = Pod.start(plan, log=self.work / f"{name}.log")
        self.pods.append(pod)
        return pod

    def _platform(self) -> Platform:
        """``up`` of the render's StatefulSets (features and events Redis): started with the rendered ACL users, or
        left running when the platform already runs them (the end-to-end drill)."""
        stateful = {str(d["metadata"]["name"]) for d in self.stack.docs if d.get("kind") == "StatefulSet"}
        platform = up(self.stack.config, log=lambda line: self.say(" ".join(line.split())), only=stateful)
        for plan in (self.stack.gateway, self.stack.online_auc, self.stable_release.plan):
            check_redis_credentials(plan)
        return platform

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.platform = self._platform()
        bin_dir = Path(self.stable_release.plan.argv[0]).parent
        load = [
            str(bin_dir / "forkcast-features"),
            "load",
            "--data",
            str(self.data),
            "--activate",
            "--no-progress",
        ]
        # As the rendered loader user (Secret forkcast-redis-loader, the one a `forkcast-features load` pod mounts).
        loader = self.platform.client_env()["REDIS_URL"]
        subprocess.run(load, env={**os.environ, "REDIS_URL": loader}, check=True, capture_output=True)
        self.say("features loaded into the platform's Redis")
        self.dns = ServiceDns(headless_service(self.stack.docs, self.spec)).start()
        self._prometheus()
        self._online_auc()
        self._gateway()
        self.stable.scale(self.spec.replicas)
        deadline = time.monotonic() + 120
        while self.stable.probe(time.monotonic()) < self.spec.replicas:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stable pods not ready; see {self.work / 'pods'}")
            time.sleep(LOOP_S)
        self.dns.set_addresses(self.stable.ready_addresses())
        self._start_gateway()
        self._publish()
        self._require_labels()
        self.say(f"stable {self.stable_release.version} ready on {self.spec.replicas} pods")
        secret = self.platform.secrets.value
        self.clicks = Clicks(
            self.platform.localise(secret("forkcast-redis-online-auc", "events-url")),
            self.platform.localise(secret("forkcast-redis-gateway", "events-url")),
            self.data,
        )
        if self.world_drift:
            self.clicks.set_drift(self.world_drift)
        self.clicks.start()
        from forkcast_local.rehearsal.traffic import Clients

        self.clients = Clients(self.gateway_port, self.keys, self.data, self.traffic).start()

    def _online_auc(self) -> None:
        port = free_port()
        plan = dataclasses.replace(
            self.stack.online_auc,
            env=self.stack.online_auc.env
            | {
                "FORKCAST_METRICS_PORT": str(port),
                "FORKCAST_AUC_COMPUTE_EVERY_S": f"{AUC_COMPUTE_S / self.scale:g}",
                "FORKCAST_AUC_GROUP": AUC_GROUP,
            },
        )
        from forkcast_contract.metric_names import ONLINE_AUC_RECENT_WINDOW_S

        plan = dataclasses.replace(
            plan, argv=(*plan.argv, "--recent-window-s", f"{ONLINE_AUC_RECENT_WINDOW_S / self.scale:g}")
        )
        self._spawn_pod("online-auc", plan)
        auc = ScrapedPod(
            "online-auc-0",
            self.spec.namespace,
            _template_labels(self.stack.docs, "online-auc"),
            f"127.0.0.1:{port}",
        )
        write_targets(self._targets(self.auc_job), file_sd_entries([auc]))

    def _prometheus(self) -> None:
        """A Prometheus configured from the render (``observability.file_sd_prometheus_config``), compressed."""
        manifests = self.stack.config.root / "render" / "manifests"  # supervisor.compose's tree of the render
        monitoring = from_objects(self.stack.docs, self.stack.config.overlay, render_observability(manifests))
        self.inference_job = observability.monitor_of(monitoring, "inference")
        self.auc_job = observability.monitor_of(monitoring, "online-auc")
        interval = min(max(SCRAPE_S / self.scale, MIN_SCRAPE_S), MAX_SCRAPE_S)
        out = self.work / "prometheus"
        out.mkdir(parents=True, exist_ok=True)
        config = observability.file_sd_prometheus_config(
            out, monitoring, self.stack.docs, manifests, interval
        )
        server = Prometheus(out / "data", config=config)
        server.start()
        self.servers.append(server)
        self.prometheus = server.url

    def _targets(self, job: str) -> Path:
        return observability.targets_file(self.work / "prometheus" / "targets", job)

    def _require_labels(self) -> None:
        require_labels(
            self.prometheus,
            self.inference_job,
            self.spec.namespace,
            self.stable_release.hash,
            self.spec.replicas,
            LABELS_TIMEOUT_S,
        )

    def _gateway(self) -> None:
        self.keys = [secrets.token_urlsafe(24) for _ in range(self.traffic.keys)]
        keys_file = self.work / "api-keys"
        keys_file.write_text("".join(f"client-{i}:{hash_key(k)}\n" for i, k in enumerate(self.keys)))
        self.gateway_port = free_port()
        plan = dataclasses.replace(
            self.stack.gateway,
            env=self.stack.gateway.env
            | {
                "FORKCAST_PORT": str(self.gateway_port),
                "FORKCAST_API_KEYS_FILE": str(keys_file),
                "FORKCAST_UPSTREAMS": f"dns+http://{self.dns.name}:{self.port}",
                "FORKCAST_DNS_SERVER": self.dns.server,
                "FORKCAST_DNS_REFRESH_S": f"{self.dns_refresh_s:g}",
                "FORKCAST_DNS_RETRY_S": "0.05",
            },
        )
        if plan.readiness is not None:
            plan = dataclasses.replace(
                plan, readiness=dataclasses.replace(plan.readiness, port=self.gateway_port)
            )
        self.gateway_plan = plan

    @property
    def dns_refresh_s(self) -> float:
        return max(DNS_REFRESH_S / self.scale, 0.05)

    @property
    def propagation_s(self) -> float:
        """From the pods' final state to every client seeing it: one gateway DNS refresh, then in-flight requests."""
        return self.dns_refresh_s + IN_FLIGHT_S

    def _start_gateway(self) -> None:
        self._spawn_pod("gateway", self.gateway_plan).wait_ready(60)

    def _publish(self) -> None:
        """Ready pods into the Service's DNS answer; live pods into the inference monitor's Prometheus targets."""
        self.dns.set_addresses(self.stable.ready_addresses() + self.canary.ready_addresses())
        live = [(s, p) for s in (self.stable, self.canary) for p in s.pods]
        names = tuple(sorted(p.name for _, p in live))
        if names == self._targets_seen:
            return
        self._targets_seen = names
        labels = self.spec.pod_template["metadata"].get("labels", {})
        pods = [
            ScrapedPod(p.name, self.spec.namespace, {**labels, "rollouts-pod-template-hash": s.release.hash},
                       f"{p.address}:{self.port}")
            for s, p in live
        ]  # fmt: skip
        write_targets(self._targets(self.inference_job), file_sd_entries(pods))

    # -- the update ----------------------------------------------------------------------------------------------
    def run(self, timeout_s: float) -> Outcome:
        started = time.monotonic()
        ctl = CanaryController(
            self.spec,
            canary_hash=self.canary_release.hash,
            stable_hash=self.stable_release.hash,
            started_at=started,
            time_scale=self.scale,
        )
        measure = PrometheusQuery(self.prometheus)
        self.say(
            f"update to {self.canary_release.version} (hash {self.canary_release.hash}), x{self.scale:g} time"
        )
        ended_at: float | None = None
        settled_at: float | None = None
        snapshot_at: float | None = None
        served_at_end: Counter[str] = Counter()
        status = ctl.status()
        while time.monotonic() - started < timeout_s:
            if self.clicks.error is not None:
                raise RehearsalError(
                    f"the feedback simulator failed: {self.clicks.error!r}"
                ) from self.clicks.error
            now = time.monotonic()
            canary_ready, stable_ready = self.canary.probe(now), self.stable.probe(now)
            status = ctl.reconcile(now, canary_ready, stable_ready, measure)
            self.canary.scale(status.canary_replicas)
            self.stable.scale(status.stable_replicas if not ctl.promoted else 0)
            self._publish()
            if ended_at is None and self._ended(status):
                ended_at = time.monotonic()
                self.say(
                    f"{status.phase} {status.message} at step {status.step_index}, weight {status.weight}"
                )
            if ended_at is not None and settled_at is None and self._settled(status):
                settled_at = time.monotonic()
            if (
                settled_at is not None
                and snapshot_at is None
                and time.monotonic() > settled_at + self.propagation_s
            ):
                snapshot_at = time.monotonic()
                served_at_end = Counter(self.clients.stats.versions)
            if snapshot_at is not None and time.monotonic() > snapshot_at + AFTER_END_S:
                break
            time.sleep(LOOP_S)
        else:
            self.say(f"timed out after {timeout_s:.0f} s in phase {status.phase} step {status.step_index}")
        stats = self.clients.stop()
        after = Counter(stats.versions)
        after.subtract(served_at_end)
        return Outcome(
            status,
            Counter(stats.versions),
            +after,
            stats.failed,
            stats.sent,
            time.monotonic() - started,
            status.events + self.stable.log + self.canary.log,
        )

    @staticmethod
    def _ended(status: Status) -> bool:
        return status.phase in ("Healthy", "Degraded") or (
            status.phase == "Paused" and status.message == PAUSE_INCONCLUSIVE
        )

    def _settled(self, status: Status) -> bool:
        """The pods match what the controller wants and every one of them is ready (an abort: stable serving)."""
        sets = ((self.canary, status.canary_replicas), (self.stable, status.stable_replicas))
        return all(len(s.pods) == n and all(p.ready for p in s.pods) for s, n in sets)

    def close(self) -> None:
        if hasattr(self, "clients"):
            self.clients.stop()
        for podset in (self.canary, self.stable):
            podset.close()
        for pod in reversed(self.pods):
            pod.terminate()
        if hasattr(self, "clicks"):
            self.clicks.stop()
        if hasattr(self, "dns"):
            self.dns.stop()
        for server in reversed(self.servers):
            server.stop()


def check_redis_credentials(plan: ContainerPlan) -> None:
    """AUTH (and PING) with every Redis URL of ``plan`` as its rendered pod has it: a user the rendered ACL lacks, or
    a password that is not its Secret's, is refused here, naming the workload, variable and user."""
    for variable in REDIS_VARIABLES:
        url = plan.env.get(variable)
        if not url:
            continue
        user = urllib.parse.urlsplit(url).username or "default"
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            raise RehearsalError(
                f"{plan.workload}: the Redis of {variable} refuses user {user!r} ({exc}): the rendered ACL "
                "(manifests/base/redis/*.acl) lacks the user or its password is not the Secret's"
            ) from exc
        finally:
            client.close()


def require_labels(url: str, job: str, namespace: str, pod_hash: str, pods: int, timeout_s: float) -> None:
    """Wait until the Prometheus at ``url`` scrapes ``pods`` targets of the monitor ``job`` with the labels the
    AnalysisTemplates select by (``namespace``, ``rollouts_pod_template_hash`` = ``pod_hash``): what the rendered
    inference monitor's relabelings must copy onto the series. Without them every analysis would stay
    inconclusive, so the rehearsal refuses to go on, naming the monitor and the labels."""
    selector = f'up{{job="{job}",namespace="{namespace}",rollouts_pod_template_hash="{pod_hash}"}}'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(prometheus_series(url, selector)) >= pods:
            return
        time.sleep(LOOP_S)
    raise RehearsalError(
        f"Prometheus has no {selector} for the {pods} stable pods after {timeout_s:g} s: the rendered monitor "
        f"{job} must copy the pods' namespace and rollouts-pod-template-hash onto their series (the "
        "AnalysisTemplates select by both)"
    )


def prometheus_series(url: str, selector: str) -> list[dict[str, str]]:
    """The label sets of the series ``selector`` matches now (Prometheus' /api/v1/series over the last minute)."""
    query = urllib.parse.urlencode({"match[]": selector, "start": f"{time.time() - 60:.3f}"})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/series?{query}", timeout=5) as resp:
            return list(json.load(resp)["data"])
    except OSError:
        return []


def rehearse(update: Update, *, timeout_s: float = 300.0) -> Outcome:
    """Run ``update`` as the rendered Rollout says, for at most ``timeout_s``; everything is stopped after."""
    rehearsal = Rehearsal(update)
    try:
        rehearsal.start()
        return rehearsal.run(timeout_s)
    finally:
        rehearsal.close()
