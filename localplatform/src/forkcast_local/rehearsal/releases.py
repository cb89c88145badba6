"""Releases for a rehearsal, made the way the pipeline makes them: trained, published to S3, promoted by a commit.

``Releases`` runs the local platform's S3 and its StatefulSets (``supervisor.up`` of ``seaweed`` and of the render's
Redis: running before any release is planned, the plans hold the ports they keep), publishes trained runs as
registry versions, promotes them with ``forkcast_retrain.promote.promote`` (the function CI's promote job runs) into
a scratch GitOps clone of ``manifests/`` (the platform's ``config.gitops``), and renders the ``local`` overlay at
that commit (``supervisor.prepare`` lays the clone's release over the tree): the inference pod template and plan of
a release are what that render says. ``dataset`` and ``train`` make the tiny dataset and models once per folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkcast_local.config import PlatformConfig
from forkcast_local.rehearsal.podsets import Release
from forkcast_local.rehearsal.runner import Stack
from forkcast_local.rehearsal.spec import RolloutSpec, load
from forkcast_local.supervisor import Platform, down, prepare, up


def dataset(root: Path, bin_dir: Path) -> Path:
    """The tiny preset in ``root/data`` (generated once)."""
    data = root / "data"
    if not (data / "dataset.json").is_file():
        cmd = [str(bin_dir / "forkcast-data"), "generate", "--preset", "tiny", "--out", str(data)]
        subprocess.run(cmd, check=True, capture_output=True)
    return data


def train(data: Path, run: Path, bin_dir: Path, *options: str) -> Path:
    """``forkcast-retrain all`` into ``run`` with ``options`` (once: an existing metrics.json is kept)."""
    if not (run / "metrics.json").is_file():
        cmd = [
            str(bin_dir / "forkcast-retrain"),
            "all",
            "--data",
            str(data),
            "--out",
            str(run),
            "--no-progress",
        ]
        subprocess.run([*cmd, *options], check=True, capture_output=True)
    return run


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@dataclass
class Releases:
    """The platform's S3 and a scratch GitOps clone; ``publish`` and ``promote`` make releases of trained runs."""

    config: PlatformConfig

    def start(self) -> Releases:
        stateful = {
            d["metadata"]["name"] for d in prepare(self.config).render.docs if d["kind"] == "StatefulSet"
        }
        self.platform: Platform = up(self.config, log=lambda _line: None, only={"seaweed", *stateful})
        repo = self.config.gitops
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(self.config.source / "manifests", repo / "manifests")
        _git(repo.parent, "init", "-q", str(repo))
        for key, value in (
            ("user.name", "forkcast rehearsal"),
            ("user.email", "rehearsal@forkcast.localhost"),
        ):
            _git(repo, "config", key, value)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "manifests as in the working tree")
        env = self.platform.client_env()
        from forkcast_registry.registry import ModelRegistry
        from forkcast_registry.settings import RegistrySettings

        settings = RegistrySettings.model_validate(
            {
                k: env[k]
                for k in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FORKCAST_BUCKET")
            }
            | {"FORKCAST_MODEL_CACHE": str(self.config.root / "registry-cache")}
        )
        self.registry = ModelRegistry.from_settings(settings)
        return self

    def stop(self) -> None:
        down(self.config, log=lambda _line: None)

    def publish(self, run: Path, salt: str) -> str:
        """Publish ``run`` as a new registry version (conditional puts; the manifest holds every sha256)."""
        from forkcast_registry.testing import publish_files
        from forkcast_retrain.publish import release_files

        version, _ = publish_files(self.registry, release_files(run), salt)
        return version

    def promote(self, version: str) -> str:
        """The release commit of ``version`` in the local overlay of the clone (``forkcast-retrain promote``)."""
        from forkcast_retrain.promote import promote

        result = promote(self.registry, self.config.gitops, self.config.overlay, version)
        return result.commit or _git(self.config.gitops, "rev-parse", "HEAD")

    def release(self) -> tuple[Release, Stack, RolloutSpec]:
        """The overlay as the clone's HEAD releases it: the inference release, the rest of the stack, the spec."""
        platform = prepare(self.config)
        docs: list[dict[str, Any]] = list(platform.render.docs)
        spec = load(docs)
        version = platform.plan("inference").env.get("FORKCAST_MODEL_VERSION", "")
        stack = Stack(platform.plan("gateway"), platform.plan("online-auc"), docs, self.config)
        return Release(version, spec.pod_template, platform.plan("inference")), stack, spec

    def rollback(self, version: str) -> subprocess.CompletedProcess[str]:
        """CI's rollback job by hand (no Argo CD here to ask): ``forkcast-retrain rollback --overlay local
        --model-version V`` in the clone, committed without a push (the clone has no remote)."""
        env = {
            **os.environ,
            **self.platform.client_env(),
            # No MLflow in the rehearsal: the alias moves fail fast on an empty file store (exit 3, which CI's
            # rollback job allows: Git is reverted first and stays reverted).
            "MLFLOW_TRACKING_URI": (self.config.root / "mlruns").as_uri(),
            "MLFLOW_ALLOW_FILE_STORE": "true",
        }
        cmd = [
            str(Path(self.platform.plan("gateway").argv[0]).parent / "forkcast-retrain"),
            "rollback", "--overlay", self.config.overlay, "--model-version", version,
            "--repo", str(self.config.gitops), "--no-push",
        ]  # fmt: skip
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)

    def head_release(self) -> str:
        from forkcast_retrain.promote import read_release, release_path

        return read_release(release_path(self.config.gitops, self.config.overlay)).version
