"""A pod of the local platform: one ``ContainerPlan`` run as a process, probed and terminated as the kubelet would.

``Pod.start`` spawns the plan's argv with exactly the plan's environment (plus PATH, HOME and the locale of this
shell, which an image would set itself), in its own process group, output to a log file. ``ready()`` and ``live()``
run the readiness / liveness probe once: an HTTP GET answering 200-399, a TCP connect, or an exec command exiting
0, as the Kubernetes probe reference defines success
(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-probes). ``terminate()`` is the
kubelet's stop: SIGTERM to the process group, ``terminationGracePeriodSeconds`` to exit, then SIGKILL
(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import tcp_ok, wait_until
from forkcast_local.plan import LOOPBACK, ContainerPlan, Probe

# What a container image would set for itself; everything else comes from the plan (the rendered environment).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")


def pod_env(plan: ContainerPlan) -> dict[str, str]:
    """The process environment of ``plan``: the rendered variables, and the few an image sets for itself."""
    return {k: os.environ[k] for k in _INHERITED if k in os.environ} | plan.env


def probe_once(probe: Probe, env: Mapping[str, str]) -> bool:
    """One probe attempt, bounded by the probe's timeout."""
    if probe.kind == "http":
        conn = http.client.HTTPConnection(LOOPBACK, probe.port, timeout=probe.timeout_s)
        try:
            conn.request("GET", probe.path or "/")
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()
    if probe.kind == "tcp":
        return tcp_ok(LOOPBACK, probe.port)
    try:
        done = subprocess.run(
            list(probe.command), env=dict(env), capture_output=True, timeout=probe.timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass
class Pod:
    """A running container of the plan; ``proc`` proves which process it is (PID + start time)."""

    plan: ContainerPlan
    proc: Proc

    @classmethod
    def start(cls, plan: ContainerPlan, *, log: Path, cwd: Path | None = None) -> Pod:
        """Spawn the container's process (it does not wait: see ``wait_ready``)."""
        return cls(plan, spawn(plan.argv, env=pod_env(plan), cwd=cwd, log=log))

    def alive(self) -> bool:
        return self.proc.alive()

    def ready(self) -> bool:
        """The readiness probe, once (no probe: ready while the process runs, as Kubernetes treats it)."""
        if not self.alive():
            return False
        probe = self.plan.readiness
        return True if probe is None else probe_once(probe, pod_env(self.plan))

    def live(self) -> bool:
        """The liveness probe, once (no probe: live while the process runs)."""
        if not self.alive():
            return False
        probe = self.plan.liveness
        return True if probe is None else probe_once(probe, pod_env(self.plan))

    def wait_ready(self, timeout_s: float) -> None:
        """Until the readiness probe passes; raises with the log tail as soon as the process dies."""
        wait_until(self.ready, timeout_s=timeout_s, what=f"pod {self.plan.name}", proc=self.proc)

    def wait_live(self, timeout_s: float) -> None:
        """Until the liveness probe passes (a started process whose readiness may depend on data still to come)."""
        wait_until(self.live, timeout_s=timeout_s, what=f"pod {self.plan.name}", proc=self.proc)

    def terminate(self) -> float:
        """SIGTERM, the plan's grace period, then SIGKILL; returns the seconds it took."""
        started = time.monotonic()
        stop(self.proc, grace_s=self.plan.termination_grace_s)
        return time.monotonic() - started
