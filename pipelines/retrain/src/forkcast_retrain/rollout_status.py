"""wait-rollout: confirm that the dev Rollout reached 100 % with the release CI pushed, before prod is proposed.

The prod merge request (and so the person who approves it) must see a release the dev canary has already
promoted fully, never one whose canary is still running or has failed. This job asks Argo CD, which already
watches the cluster, instead of talking to the Kubernetes API: a CI runner outside the cluster needs only an Argo
CD API token (a read-only account scoped to the forkcast project), no kubeconfig. It reads the live Rollout
through ``GET /api/v1/applications/{app}/resource`` (Argo CD's ApplicationService.GetResource: the live manifest
as a JSON string), once after asking Argo CD to refresh the Application from Git.

The decision (``decide``) is Argo Rollouts' own status logic, RolloutStatusString in
argoproj/argo-rollouts pkg/kubectl-argo-rollouts/info/rollout_info.go (what ``kubectl argo rollouts status`` and
Argo CD's Rollout health check print): Degraded for InvalidSpec or a condition with reason RolloutAborted or
ProgressDeadlineExceeded; Paused for spec.paused or any status.pauseConditions; Progressing while the controller
has not observed the generation, updated replicas are short or not yet available; for a canary Healthy only when
status.stableRS equals status.currentPodHash (every step done, 100 %). On top of that the live pod template must
carry the release this pipeline pushed (annotation forkcast.io/model-version and/or the inference image), so an
older healthy Rollout is never taken for the new one.

Code releases pin more than inference: the gateway and the monitoring jobs are Deployments, read through the same
resource endpoint (group apps, version v1) and judged as ``kubectl rollout status`` judges a Deployment
(k8s.io/kubectl pkg/polymorphichelpers/rollout_status.go, DeploymentStatusViewer): a ProgressDeadlineExceeded
condition fails; the generation not yet observed, updated replicas short of spec.replicas, old replicas still
running (status.replicas above updatedReplicas) or updated ones not yet available wait; otherwise done.

The rollback job asks the same API which Rollouts are aborted (``aborted``): status.abort set, or a condition with
reason RolloutAborted (argoproj/argo-rollouts utils/conditions/conditions.go, RolloutAbortedReason; a progress
deadline with progressDeadlineAbort aborts the same way), and what their pod template carries.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import SecretStr

from forkcast_contract.settings import ForkcastSettings

MODEL_VERSION_ANNOTATION = "forkcast.io/model-version"
ABORT_REASONS = ("RolloutAborted", "ProgressDeadlineExceeded")

Outcome = Literal["done", "wait", "failed"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class Expected:
    """The release the pipeline pushed: a model version, an inference image (name@digest), or both."""

    model_version: str | None = None
    image: str | None = None


def rollout_status(ro: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo Rollouts computes it for a canary Rollout (see the module docstring)."""
    meta, spec, status = ro.get("metadata", {}), ro.get("spec", {}), ro.get("status", {})
    observed = str(status.get("observedGeneration", ""))
    if observed.isdigit() and int(observed) < int(meta.get("generation", 0)):
        return "Progressing", "waiting for rollout spec update to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "InvalidSpec":
            return "Degraded", f"InvalidSpec: {cond.get('message', '')}"
        if cond.get("reason") in ABORT_REASONS:
            return "Degraded", f"{cond['reason']}: {cond.get('message', '')}"
    if spec.get("paused"):
        return "Paused", "manually paused"
    for pause in status.get("pauseConditions") or []:
        return "Paused", str(pause.get("reason", "paused"))
    replicas = int(spec.get("replicas", 1))
    updated, available = int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0))
    if updated < replicas:
        return "Progressing", "more replicas need to be updated"
    if available < updated:
        return "Progressing", "updated replicas are still becoming available"
    if status.get("stableRS") and status.get("stableRS") == status.get("currentPodHash"):
        return "Healthy", ""
    return "Progressing", "waiting for all steps to complete"


def aborted(ro: dict[str, Any]) -> bool:
    """Whether Argo Rollouts aborted this Rollout's update (see the module docstring)."""
    status = ro.get("status") or {}
    if status.get("abort") is True:
        return True
    return any(c.get("reason") == "RolloutAborted" for c in status.get("conditions") or [])


def deployment_status(dep: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of a Deployment's rollout as ``kubectl rollout status`` decides it."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status", {})
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return "Progressing", "waiting for the deployment spec update to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "Degraded", f"ProgressDeadlineExceeded: {cond.get('message', '')}"
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    if updated < replicas:
        return "Progressing", f"{updated} of {replicas} updated replicas"
    if int(status.get("replicas", 0)) > updated:
        return "Progressing", "old replicas are pending termination"
    if int(status.get("availableReplicas", 0)) < updated:
        return "Progressing", "updated replicas are still becoming available"
    return "Healthy", ""


def _repository(image: str) -> str:
    """An image reference without its digest or tag (a port in the registry host is not a tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return name


def decide_deployment(dep: dict[str, Any], image: str) -> Decision:
    """Whether every container of the Deployment's template that runs ``image``'s repository runs ``image``,
    rolled out completely (done), getting there (wait) or failed."""
    containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    running = [
        str(c.get("image")) for c in containers if _repository(str(c.get("image", ""))) == _repository(image)
    ]
    if not running:
        return Decision("failed", f"no container of this Deployment runs {_repository(image)}")
    if any(r != image for r in running):
        return Decision("wait", f"the template runs {', '.join(sorted(set(running)))}, not {image} yet")
    status, message = deployment_status(dep)
    if status == "Healthy":
        return Decision("done", f"Healthy: every replica runs {image}")
    if status == "Degraded":
        return Decision("failed", f"{status}: {message}")
    return Decision("wait", f"{status}: {message}")


def template_release(ro: dict[str, Any], container: str = "inference") -> tuple[str | None, str | None]:
    """(model version annotation, image of ``container``) of the Rollout's desired pod template."""
    template = ro.get("spec", {}).get("template", {})
    version = (template.get("metadata", {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)
    image = next(
        (
            c.get("image")
            for c in template.get("spec", {}).get("containers", [])
            if c.get("name") == container
        ),
        None,
    )
    return version, image


def decide(ro: dict[str, Any], expected: Expected) -> Decision:
    """Whether the live Rollout runs the expected release at 100 % (done), is getting there (wait) or failed."""
    version, image = template_release(ro)
    if expected.model_version is not None and version != expected.model_version:
        return Decision(
            "wait", f"the Rollout's template has model {version}, not {expected.model_version} yet"
        )
    if expected.image is not None and image != expected.image:
        return Decision("wait", f"the Rollout's template runs {image}, not {expected.image} yet")
    status, message = rollout_status(ro)
    if status == "Healthy":
        return Decision("done", "Healthy: every canary step done, 100 % on the new release")
    if status in ("Degraded", "InvalidSpec"):
        return Decision("failed", f"{status}: {message}")
    return Decision("wait", f"{status}: {message}")


@dataclass(frozen=True)
class ArgoCD:
    """The two Argo CD API calls this job makes (REST, bearer token in the Authorization header)."""

    server: str
    token: str
    timeout_s: float = 15

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        url = f"{self.server.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    def refresh(self, app: str) -> None:
        """Ask Argo CD to compare the Application with Git now rather than at its next poll."""
        self._get(f"/api/v1/applications/{urllib.parse.quote(app)}", {"refresh": "normal"})

    def application(self, app: str) -> dict[str, Any]:
        """The Application (spec.source.path: the overlay; spec.destination.namespace: where it deploys)."""
        return self._get(f"/api/v1/applications/{urllib.parse.quote(app)}", {})

    def resource(self, app: str, namespace: str, name: str, kind: Kind) -> dict[str, Any]:
        """The live manifest of one resource the Application manages."""
        group, version = RESOURCE_KINDS[kind]
        query = {
            "namespace": namespace,
            "resourceName": name,
            "group": group,
            "version": version,
            "kind": kind,
        }
        body = self._get(f"/api/v1/applications/{urllib.parse.quote(app)}/resource", query)
        live: dict[str, Any] = json.loads(body["manifest"])
        return live

    def rollout(self, app: str, namespace: str, name: str) -> dict[str, Any]:
        return self.resource(app, namespace, name, "Rollout")


Kind = Literal["Rollout", "Deployment"]
RESOURCE_KINDS: dict[str, tuple[str, str]] = {
    "Rollout": ("argoproj.io", "v1alpha1"),
    "Deployment": ("apps", "v1"),
}


class Workload(NamedTuple):
    """A workload a release must bring to 100 %: its kind, name, the image (name@digest) it must run and, for the
    inference Rollout, the model version its template must carry (None: not part of this release)."""

    kind: Kind
    name: str
    image: str | None
    model_version: str | None = None


def decide_workload(live: dict[str, Any], workload: Workload) -> Decision:
    if workload.kind == "Rollout":
        return decide(live, Expected(workload.model_version, workload.image))
    if workload.image is None:
        raise ValueError(f"Deployment/{workload.name}: a code release names the image it must run")
    return decide_deployment(live, workload.image)


def wait_for_rollout(
    argocd: ArgoCD,
    app: str,
    namespace: str,
    expected: Expected,
    *,
    name: str = "inference",
    timeout_s: float = 3600,
    interval_s: float = 20,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Decision:
    """A model (and/or inference image) release: ``wait_for_workloads`` on the one Rollout that carries it."""
    workload = Workload("Rollout", name, expected.image, expected.model_version)
    return wait_for_workloads(
        argocd,
        app,
        namespace,
        [workload],
        timeout_s=timeout_s,
        interval_s=interval_s,
        clock=clock,
        sleep=sleep,
        log=log,
    )


def wait_for_workloads(
    argocd: ArgoCD,
    app: str,
    namespace: str,
    workloads: list[Workload],
    *,
    timeout_s: float = 3600,
    interval_s: float = 20,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Decision:
    """Poll every workload until all are done (done), one failed (failed), or ``timeout_s`` passes (failed)."""
    deadline = clock() + timeout_s
    argocd.refresh(app)
    pending = list(workloads)
    last: dict[Workload, Decision] = {}
    while True:
        for workload in list(pending):
            try:
                decision = decide_workload(
                    argocd.resource(app, namespace, workload.name, workload.kind), workload
                )
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                decision = Decision("wait", f"Argo CD did not answer: {exc}")
            last[workload] = decision
            log(f"{namespace}/{workload.kind}/{workload.name}: {decision.outcome}: {decision.reason}")
            if decision.outcome == "failed":
                return Decision("failed", f"{workload.kind}/{workload.name}: {decision.reason}")
            if decision.outcome == "done":
                pending.remove(workload)
        if not pending:
            names = ", ".join(f"{w.kind}/{w.name}" for w in workloads)
            parts = [
                ("model", any(w.model_version for w in workloads)),
                ("images", any(w.image for w in workloads)),
            ]
            released = " and ".join(part for part, present in parts if present)
            return Decision("done", f"{names} at 100 % on the released {released}")
        if clock() >= deadline:
            waiting = "; ".join(f"{w.kind}/{w.name}: {last[w].reason}" for w in pending)
            return Decision("failed", f"not at 100 % after {timeout_s:.0f} s: {waiting}")
        sleep(interval_s)


class ArgoCDSettings(ForkcastSettings):
    """FORKCAST_ARGOCD_SERVER (https://argocd.example.com) and FORKCAST_ARGOCD_TOKEN (a read-only API token)."""

    argocd_server: str = ""
    argocd_token: SecretStr = SecretStr("")

    def client(self) -> ArgoCD:
        if not self.argocd_server or not self.argocd_token.get_secret_value():
            raise ValueError("set FORKCAST_ARGOCD_SERVER and FORKCAST_ARGOCD_TOKEN (CI/CD variables, masked)")
        return ArgoCD(self.argocd_server, self.argocd_token.get_secret_value())
