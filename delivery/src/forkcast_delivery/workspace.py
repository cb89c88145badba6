"""What each image runs: the workspace package an image is built from, its Dockerfile, and its console scripts.

Images in the base are named after the workspace package they hold (``forkcast-gateway``); an overlay's
kustomization ``images:`` entry renames them (newName + newTag or digest). So a rendered image is traced back to
its package through the overlay's entries, and the package to its folder, pyproject.toml and Dockerfile.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Package:
    name: str
    folder: Path
    scripts: frozenset[str]

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"


def packages(root: Path) -> dict[str, Package]:
    """Every workspace member by project name."""
    members = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    out = {}
    for member in members:
        project = tomllib.loads((root / member / "pyproject.toml").read_text())["project"]
        out[project["name"]] = Package(project["name"], root / member, frozenset(project.get("scripts", {})))
    return out


def image_names(overlay_dir: Path) -> dict[str, str]:
    """Rendered image repository (newName) -> the base image name it replaces, from the overlay's ``images:`` and
    those of the overlays it builds on (a ``resources`` entry that is a kustomization folder, such as prod-cluster's
    ``../prod``): without them an overlay of an overlay would hide every forkcast container from the checks."""
    kustomization: dict[str, Any] = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    names: dict[str, str] = {}
    for resource in kustomization.get("resources") or []:
        folder = overlay_dir / str(resource)
        if (folder / "kustomization.yaml").is_file():
            names |= image_names(folder)
    return names | {e.get("newName", e["name"]): e["name"] for e in kustomization.get("images") or []}


def repository(image: str) -> str:
    """``registry/x/y:tag`` or ``registry/x/y@sha256:…`` -> ``registry/x/y`` (a port in the host is kept)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


_INSTRUCTION = re.compile(r"^(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", re.MULTILINE)
_PACKAGE = re.compile(r"--package\s+(\S+)")


@dataclass(frozen=True)
class Image:
    """What a Dockerfile builds: the packages it exports from the lock, and its exec-form ENTRYPOINT/CMD."""

    packages: frozenset[str]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


def read_dockerfile(path: Path) -> Image:
    text = path.read_text()
    final = text.rsplit("\nFROM ", 1)[-1]  # ENTRYPOINT/CMD of the final stage only
    found = {kind: tuple(json.loads(body)) for kind, body in _INSTRUCTION.findall(final)}
    return Image(frozenset(_PACKAGE.findall(text)), found.get("ENTRYPOINT", ()), found.get("CMD", ()))


def program(container: dict[str, Any], image: Image) -> str | None:
    """The executable a container runs, as Kubernetes combines command/args with the image's ENTRYPOINT/CMD
    (https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes)."""
    if container.get("command"):
        return str(container["command"][0]).rsplit("/", 1)[-1]
    if image.entrypoint:
        return image.entrypoint[0].rsplit("/", 1)[-1]
    argv = container.get("args") or image.cmd
    return str(argv[0]).rsplit("/", 1)[-1] if argv else None
