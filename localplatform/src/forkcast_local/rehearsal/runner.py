"""The rehearsal with real processes: ``rehearse`` runs one canary ``Update`` of the rendered Rollout to its end.

What runs: a features Redis and an events Redis (forkcast_devservers), the rendered gateway, online-AUC job and
inference containers (``Pod`` with their ``ContainerPlan``), the feedback simulator, a Prometheus scraping the pods
with the labels the rendered PodMonitors give them (``scrape``), and ``ServiceDns`` standing in for the headless
Service the gateway resolves. ``CanaryController`` decides; this loop probes the pods, hands the ready counts to it,
scales the two ``PodSet``s to the replicas it returns, publishes the ready pods in DNS and the live ones to
Prometheus, and measures the templates' own queries against that Prometheus. Every duration the cluster would wait
(pauses, analysis intervals, the progress deadline, probe periods, the gateway's DNS refresh, the online-AUC job's
windows) is divided by ``time_scale``; PromQL range selectors stay as the templates write them.

The Redis servers run without the rendered ACL users: the feedback simulator, which stands in for the app's
clients, needs both streams and no rendered user has that.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.servers import Prometheus, RedisServer
from forkcast_gateway.auth import hash_key
from forkcast_local.plan import ContainerPlan
from forkcast_local.pods import Pod
from forkcast_local.rehearsal.controller import PAUSE_INCONCLUSIVE, CanaryController, Status, Verdict
from forkcast_local.rehearsal.dns import ServiceDns
from forkcast_local.rehearsal.podsets import PodSet, Release, addresses
from forkcast_local.rehearsal.prometheus import PrometheusQuery
from forkcast_local.rehearsal.scrape import ScrapedPod, file_sd_entries, prometheus_config, write_targets
from forkcast_local.rehearsal.spec import RolloutSpec

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
    """What the rendered platform hands the rehearsal: the gateway's and the online-AUC job's plans, the render."""

    gateway: ContainerPlan
    online_auc: ContainerPlan
    docs: list[Doc]


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
        self.procs: list[Proc] = []
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
    def _redis(self, name: str) -> str:
        server = RedisServer(self.work / name)
        server.start()
        self.servers.append(server)
        return server.url

    def _urls(self, plan: ContainerPlan, env: dict[str, str]) -> ContainerPlan:
        """``plan`` with the rehearsal's Redis servers and ``env`` laid over its environment."""
        redis = {"REDIS_URL": self.features_url, "FORKCAST_EVENTS_REDIS_URL": self.events_url}
        return dataclasses.replace(
            plan, env=plan.env | {k: v for k, v in redis.items() if k in plan.env} | env
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = spawn(argv, env={**os.environ, **(env or {})}, log=self.work / f"{name}.log")
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.features_url, self.events_url = self._redis("redis"), self._redis("redis-events")
        for podset in (self.stable, self.canary):
            podset.release = dataclasses.replace(podset.release, plan=self._urls(podset.release.plan, {}))
        bin_dir = Path(self.stable_release.plan.argv[0]).parent
        load = [
            str(bin_dir / "forkcast-features"),
            "load",
            "--data",
            str(self.data),
            "--activate",
            "--no-progress",
        ]
        subprocess.run(
            load, env={**os.environ, "REDIS_URL": self.features_url}, check=True, capture_output=True
        )
        self.say("features loaded into Redis")
        self.dns = ServiceDns(headless_service(self.stack.docs, self.spec)).start()
        self._online_auc(bin_dir)
        self._prometheus()
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
        self.say(f"stable {self.stable_release.version} ready on {self.spec.replicas} pods")
        self._spawn("feedback-sim", [str(bin_dir / "forkcast-feedback-sim"), "--redis-url", self.events_url,
                                     "--data", str(self.data), "--drift", f"{self.world_drift:g}"])  # fmt: skip
        from forkcast_local.rehearsal.traffic import Clients

        self.clients = Clients(self.gateway_port, self.keys, self.data, self.traffic).start()

    def _online_auc(self, bin_dir: Path) -> None:
        port = free_port()
        plan = self._urls(
            self.stack.online_auc,
            {
                "FORKCAST_METRICS_PORT": str(port),
                "FORKCAST_AUC_COMPUTE_EVERY_S": f"{AUC_COMPUTE_S / self.scale:g}",
            },
        )
        from forkcast_contract.metric_names import ONLINE_AUC_RECENT_WINDOW_S

        plan = dataclasses.replace(
            plan, argv=(*plan.argv, "--recent-window-s", f"{ONLINE_AUC_RECENT_WINDOW_S / self.scale:g}")
        )
        pod = Pod.start(plan, log=self.work / "online-auc.log")
        self.pods.append(pod)
        self.auc_target = ScrapedPod(
            "online-auc-0",
            self.spec.namespace,
            _template_labels(self.stack.docs, "online-auc"),
            f"127.0.0.1:{port}",
        )

    def _prometheus(self) -> None:
        self.targets = self.work / "targets.json"
        write_targets(self.targets, [])
        interval = min(max(SCRAPE_S / self.scale, MIN_SCRAPE_S), MAX_SCRAPE_S)
        config = self.work / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.targets, job="pods", interval_s=interval)))
        server = Prometheus(self.work / "prometheus", config=config)
        server.start()
        self.servers.append(server)
        self.prometheus = server.url

    def _gateway(self) -> None:
        self.keys = [secrets.token_urlsafe(24) for _ in range(self.traffic.keys)]
        keys_file = self.work / "api-keys"
        keys_file.write_text("".join(f"client-{i}:{hash_key(k)}\n" for i, k in enumerate(self.keys)))
        self.gateway_port = free_port()
        plan = self._urls(
            self.stack.gateway,
            {
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
        pod = Pod.start(self.gateway_plan, log=self.work / "gateway.log")
        self.pods.append(pod)
        pod.wait_ready(60)

    def _publish(self) -> None:
        """Ready pods into the Service's DNS answer; live pods (and the online-AUC job) into Prometheus' targets."""
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
        entries = file_sd_entries(self.stack.docs, "inference", pods)
        entries += file_sd_entries(self.stack.docs, "online-auc", [self.auc_target])
        write_targets(self.targets, entries)

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
        for proc in reversed(self.procs):
            stop(proc, grace_s=5)
        if hasattr(self, "dns"):
            self.dns.stop()
        for server in reversed(self.servers):
            server.stop()


def rehearse(update: Update, *, timeout_s: float = 300.0) -> Outcome:
    """Run ``update`` as the rendered Rollout says, for at most ``timeout_s``; everything is stopped after."""
    rehearsal = Rehearsal(update)
    try:
        rehearsal.start()
        return rehearsal.run(timeout_s)
    finally:
        rehearsal.close()
