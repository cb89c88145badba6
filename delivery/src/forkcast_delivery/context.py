"""Everything a wiring check reads about one overlay: its render, the repository's flow table and list of
cluster-provided objects, the workspace packages behind its images, and the Argo CD Applications that sync it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from forkcast_delivery import workspace
from forkcast_delivery.objects import PodTemplate, pod_templates
from forkcast_delivery.render import Doc, Render, render

FLOWS = Path("manifests/flows.yaml")
PROVIDED = Path("manifests/provided-by-cluster.yaml")
ARGOCD = Path("deploy/argocd")
# Cluster-wide monitoring content (the PrometheusRule, the dashboards), rendered once into the monitoring namespace
# and read against every overlay's workloads.
OBSERVABILITY = Path("manifests/observability")


@dataclass
class Context:
    root: Path
    overlay_dir: Path
    render: Render
    flows: dict[str, Any] = field(default_factory=dict)
    provided: dict[str, Any] = field(default_factory=dict)
    applications: list[Doc] = field(default_factory=list)
    projects: list[Doc] = field(default_factory=list)
    observability: tuple[Doc, ...] = ()

    @property
    def docs(self) -> tuple[Doc, ...]:
        return self.render.docs

    @cached_property
    def components(self) -> frozenset[str]:
        """The names (folder names) of the kustomize Components the overlay uses, directly or through the
        kustomizations it builds on: a flow tagged ``component: <name>`` in flows.yaml is expected only then."""
        return components_of(self.overlay_dir)

    @cached_property
    def templates(self) -> list[PodTemplate]:
        return pod_templates(self.docs)

    @cached_property
    def packages(self) -> dict[str, workspace.Package]:
        return workspace.packages(self.root)

    @cached_property
    def image_names(self) -> dict[str, str]:
        return workspace.image_names(self.overlay_dir)

    def package_of(self, container: dict[str, Any]) -> workspace.Package | None:
        """The workspace package a container's image is built from (None: a third-party image)."""
        image = str(container.get("image", ""))
        base = self.image_names.get(workspace.repository(image), workspace.repository(image))
        return self.packages.get(base)

    def program_of(self, container: dict[str, Any]) -> str | None:
        """The console script a forkcast container runs (None for third-party images or a missing Dockerfile)."""
        package = self.package_of(container)
        if package is None or not package.dockerfile.exists():
            return None
        return workspace.program(container, workspace.read_dockerfile(package.dockerfile))


def components_of(kustomization_dir: Path) -> frozenset[str]:
    """Folder names of the Components a kustomization uses, following its ``resources`` and ``components`` that
    are kustomization folders (an overlay of an overlay uses what the inner one uses)."""
    kustomization = load_yaml(kustomization_dir / "kustomization.yaml")
    found: set[str] = set()
    for entry in kustomization.get("components") or []:
        folder = (kustomization_dir / str(entry)).resolve()
        found |= {folder.name} | components_of(folder)
    for entry in kustomization.get("resources") or []:
        folder = kustomization_dir / str(entry)
        if (folder / "kustomization.yaml").is_file():
            found |= components_of(folder)
    return frozenset(found)


def load_yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def argocd_objects(root: Path, kind: str) -> list[Doc]:
    """The Argo CD objects of ``kind`` (Application, AppProject) in deploy/argocd."""
    docs: list[Doc] = []
    for path in sorted((root / ARGOCD).glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    return docs


def applications(root: Path) -> list[Doc]:
    return argocd_objects(root, "Application")


def shared_docs(root: Path) -> tuple[Doc, ...]:
    """The render of manifests/observability (none when the folder does not exist)."""
    folder = root / OBSERVABILITY
    return render(folder).docs if (folder / "kustomization.yaml").exists() else ()


def build(root: Path, overlay_dir: Path, observability: tuple[Doc, ...] | None = None) -> Context:
    """The context of one overlay; ``observability`` is the render of manifests/observability when the caller
    already has it (it is the same for every overlay), else it is rendered here."""
    return Context(
        root=root,
        overlay_dir=overlay_dir,
        render=render(overlay_dir),
        flows=load_yaml(root / FLOWS),
        provided=load_yaml(root / PROVIDED),
        applications=applications(root),
        projects=argocd_objects(root, "AppProject"),
        observability=shared_docs(root) if observability is None else observability,
    )
