"""promote: point an overlay's release file at a verified version and commit it.

The release file (``manifests/overlays/<env>/model-release.yaml``, a ConfigMap of the inference service's
environment) is the only file this step ever writes, so each promotion is one small reviewable commit that Argo
CD deploys. Undoing one after an aborted canary is rollback.py's job, which finds the release by the file's
content (not by this commit's message, which a squash merge may drop). The version is downloaded and verified
before anything in Git changes, against the manifest sha256 another overlay already pinned for it (dev's, when
prod is proposed); a release that names a version without both pins is refused where it is read
(registry_format.ModelRelease).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from forkcast_contract.model_format import MODEL_FILE
from forkcast_contract.registry_format import (
    GATE_REPORT_FILE,
    RELEASE_CONFIGMAP_NAME,
    RELEASE_FILE_NAME,
    ModelRelease,
)
from forkcast_registry.errors import IntegrityError
from forkcast_registry.registry import ModelRegistry
from forkcast_retrain.errors import DataError

TRAILER = "Forkcast-Release"  # commit trailer naming overlay and version (for people reading the log)


def release_path(repo: Path, overlay: str) -> Path:
    return repo / "manifests" / "overlays" / overlay / RELEASE_FILE_NAME


def render_release(overlay: str, release: ModelRelease) -> str:
    """The release file; values are JSON strings, which YAML reads back unchanged."""
    data = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in release.as_env().items())
    return (
        f"# Model release of the {overlay} overlay: the registry version the inference service loads (SPEC §4).\n"
        "# Written only by `forkcast-retrain promote`; every change is one Git commit that Argo CD deploys.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: {RELEASE_CONFIGMAP_NAME}\n  labels:\n    app.kubernetes.io/part-of: forkcast\n"
        f"data:\n{data}\n"
    )


def read_release(path: Path) -> ModelRelease:
    """Parse and check a release file (also the project-side check CI runs on every overlay)."""
    return parse_release(path.read_text(), str(path))


def parse_release(text: str, where: str) -> ModelRelease:
    """Parse and check the text of a release file (``where`` names it in errors: a path, or ref:path)."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
        raise DataError(f"{where} is not a ConfigMap")
    if doc.get("metadata", {}).get("name") != RELEASE_CONFIGMAP_NAME:
        raise DataError(f"{where}: the ConfigMap must be named {RELEASE_CONFIGMAP_NAME}")
    try:
        return ModelRelease.from_env({str(k): str(v) for k, v in (doc.get("data") or {}).items()})
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from exc


def overlay_releases(repo: Path) -> dict[str, ModelRelease]:
    """The release of every overlay in ``repo`` that has a release file, checked (pins included)."""
    found = sorted((repo / "manifests" / "overlays").glob(f"*/{RELEASE_FILE_NAME}"))
    return {path.parent.name: read_release(path) for path in found}


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise DataError(f"git {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


@dataclass(frozen=True)
class PromoteResult:
    changed: bool
    version: str
    commit: str | None
    message: str


def promote(
    registry: ModelRegistry, repo: Path, overlay: str, version: str, branch: str | None = None
) -> PromoteResult:
    """Verify ``version``, rewrite the overlay's release file and commit it (on ``branch`` when given)."""
    path = release_path(repo, overlay)
    if not path.is_file():
        raise DataError(f"no overlay {overlay!r}: {path} does not exist")
    # Another overlay that already releases this version pinned its manifest (dev, before prod is proposed): the
    # download must verify against that pin, so prod never gets a manifest that changed in S3 after dev ran it.
    pinned = {
        other: release.manifest_sha256
        for other, release in overlay_releases(repo).items()
        if other != overlay and release.version == version
    }
    expected = next(iter(sorted(set(pinned.values()))), None)
    if len(set(pinned.values())) > 1:
        raise DataError(f"overlays pin different manifests for {version}: {pinned}; refusing to promote it")
    try:
        local = registry.download(version, expected)  # refuses unknown, incomplete or tampered versions
    except IntegrityError as exc:
        if expected is None:
            raise
        raise DataError(
            f"{version}'s manifest in the registry is not the one {', '.join(sorted(pinned))} pinned "
            f"({expected[:12]}…); refusing to promote it: {exc}"
        ) from exc
    manifest = local.manifest
    if manifest.gate_passed is False:
        raise DataError(f"version {version} failed its gate; refusing to promote it")
    release = ModelRelease(
        uri=registry.uri(version),
        version=version,
        model_sha256=manifest.files[MODEL_FILE].sha256,
        manifest_sha256=local.manifest_sha256,
    )
    if read_release(path) == release:
        return PromoteResult(False, version, None, f"{overlay} already releases {version}; nothing to do")
    gate = (
        f"{registry.uri(version)}{GATE_REPORT_FILE}"
        if GATE_REPORT_FILE in manifest.files
        else "no gate report"
    )
    message = (
        f"Release model {version} to {overlay}\n\n"
        f"roc_auc={manifest.metrics['roc_auc']:.4f} logloss={manifest.metrics['logloss']:.4f}\n"
        f"gate: {'passed' if manifest.gate_passed else 'not run'} ({gate})\n"
        f"uri: {release.uri}\n\n{TRAILER}: {overlay} {version}\n"
    )
    if branch:
        _git(repo, "checkout", "-b", branch)
    path.write_text(render_release(overlay, release))
    try:
        _git(repo, "add", "--", str(path))
        _git(repo, "commit", "-q", "-m", message, "--", str(path))
    except DataError:
        _git(repo, "checkout", "HEAD", "--", str(path))  # no half-promotion: the file goes back as it was
        raise
    return PromoteResult(True, version, _git(repo, "rev-parse", "HEAD"), message)
