"""The canary's and the stable's ReplicaSets as real pods: started, probed for readiness, terminated with grace.

Each pod is the rendered inference container (``forkcast_local.pods.Pod`` with the release's ``ContainerPlan``) on
an address of its own (127.x.y.z) and the port every pod shares, as pods share their container port in a cluster;
its ``emptyDir`` model cache is its own. Readiness follows the kubelet: the probe runs every ``periodSeconds``
(compressed), a pod is ready after one success and unready after ``failureThreshold`` failures in a row
(https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/). Scaling down terminates the
newest pods first (``terminate``: SIGTERM, the grace period, SIGKILL) after taking them out of the Service's answer,
as an endpoint is removed when its pod starts terminating.

The probe runs against the pod's own address: ``pods.probe_once`` dials 127.0.0.1, where none of these pods
listens, so the HTTP GET of the probe (success = a status of 200-399, as the kubelet counts it) is made here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkcast_local.plan import ContainerPlan, Probe
from forkcast_local.pods import Pod

# k8s.io/apimachinery/pkg/util/rand SafeEncodeString's alphabet (no vowels, no 0/1/3: no words, no look-alikes).
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
MIN_PROBE_PERIOD_S = 0.1


def pod_template_hash(template: dict[str, Any]) -> str:
    """The ``rollouts-pod-template-hash`` of a pod template, as Argo Rollouts builds it (utils/controller/
    controller.go ComputeHash: FNV-1a 32 of the template, its decimal digits through rand.SafeEncodeString). Argo
    hashes Go's printing of the struct; here the JSON of the rendered template is hashed, so the value differs from
    the cluster's, but it changes exactly when the template does."""
    h = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def addresses(run: str) -> Iterator[str]:
    """Loopback addresses 127.A.B.n for one rehearsal (A.B from ``run``, so two rehearsals never share one)."""
    digest = hashlib.sha256(run.encode()).digest()
    a, b = 1 + digest[0] % 250, digest[1]
    for n in range(2, 255):
        yield f"127.{a}.{b}.{n}"


@dataclass(frozen=True)
class Release:
    """One side of the canary: a release's model version, its rendered pod template and its inference plan."""

    version: str
    template: dict[str, Any]
    plan: ContainerPlan

    @property
    def hash(self) -> str:
        return pod_template_hash(self.template)


@dataclass
class RunningPod:
    name: str
    address: str
    pod: Pod
    ready: bool = False
    failures: int = 0
    next_probe: float = 0.0


def probe_at(address: str, probe: Probe) -> bool:
    """One readiness probe of a pod listening on ``address``."""
    if probe.kind != "http":
        raise ValueError(f"the rehearsal probes inference over HTTP, not {probe.kind}")
    conn = http.client.HTTPConnection(address, probe.port, timeout=min(probe.timeout_s, 1.0))
    try:
        conn.request("GET", probe.path or "/")
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class PodSet:
    """The pods of one ReplicaSet (one release) on ``port``; ``scale`` makes its pod count ``.spec.replicas``."""

    release: Release
    port: int
    hosts: Iterator[str]
    work: Path
    time_scale: float
    pods: list[RunningPod] = field(default_factory=list)
    terminating: list[threading.Thread] = field(default_factory=list)
    started: int = 0
    log: list[str] = field(default_factory=list)

    def _plan(self, address: str, name: str) -> ContainerPlan:
        plan = self.release.plan
        env = plan.env | {
            "FORKCAST_HOST": address,
            "FORKCAST_PORT": str(self.port),
            "FORKCAST_MODEL_CACHE": str(self.work / name / "cache"),  # an emptyDir is per pod
        }
        readiness = dataclasses.replace(plan.readiness, port=self.port) if plan.readiness else None
        return dataclasses.replace(plan, env=env, readiness=readiness, liveness=None)

    def scale(self, replicas: int) -> None:
        while len(self.pods) < replicas:
            name = f"inference-{self.release.hash}-{self.started}"
            self.started += 1
            address = next(self.hosts)
            (self.work / name).mkdir(parents=True, exist_ok=True)
            pod = Pod.start(self._plan(address, name), log=self.work / name / "pod.log")
            self.pods.append(RunningPod(name, address, pod))
            self.log.append(f"{time.monotonic():.3f} {name} started on {address}:{self.port}")
        while len(self.pods) > replicas:
            # ReplicaSet scale-down prefers unready pods, then the newest (controller_utils.go ActivePods ordering).
            victim = min(reversed(self.pods), key=lambda p: p.ready)
            self.pods.remove(victim)
            self.log.append(f"{time.monotonic():.3f} {victim.name} terminating")
            thread = threading.Thread(target=victim.pod.terminate, daemon=True)
            thread.start()
            self.terminating.append(thread)

    def probe(self, now: float) -> int:
        """Run the probes that are due; returns the ready (available) pod count."""
        probe = self.release.plan.readiness
        for p in self.pods:
            if probe is None:
                p.ready = p.pod.alive()
                continue
            if now < p.next_probe:
                continue
            p.next_probe = now + max(probe.period_s / self.time_scale, MIN_PROBE_PERIOD_S)
            if p.pod.alive() and probe_at(p.address, dataclasses.replace(probe, port=self.port)):
                p.ready, p.failures = True, 0
            else:
                p.failures += 1
                if p.failures >= probe.failure_threshold or not p.pod.alive():
                    p.ready = False
        return sum(p.ready for p in self.pods)

    def ready_addresses(self) -> list[str]:
        return [p.address for p in self.pods if p.ready]

    def close(self) -> None:
        self.scale(0)
        for thread in self.terminating:
            thread.join(60)
