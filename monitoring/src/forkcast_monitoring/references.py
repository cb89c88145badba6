"""Where the drift job finds a model version's training reference (``data_profile.json``, ``probe.npz``).

Two sources behind one call, ``directory(version)``: a local folder with one directory per version (a developer's
``forkcast-retrain export`` output, the drill, the tests), and the model registry in S3 (the cluster), whose
versions are downloaded into a cache on first sight and verified against the version's manifest sha256s by
forkcast_registry's own download code, the same check the inference service runs before it serves a version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from forkcast_contract.registry_format import DATA_PROFILE_FILE, is_version
from forkcast_registry.errors import IntegrityError, RegistryError, VersionNotFoundError
from forkcast_registry.registry import ModelRegistry

log = logging.getLogger("forkcast_monitoring.references")


class ReferenceUnavailableError(Exception):
    """The source could not be asked now (S3 down): try again at the next measurement, do not give up on it."""


class ReferenceSource(Protocol):
    def directory(self, version: str) -> Path | None:
        """The directory holding ``version``'s reference files; None when the version has none (for good)."""
        ...

    def describe(self) -> str: ...


class DirectoryReferences:
    """``root/<version>/data_profile.json`` (+ ``probe.npz``); a name that leaves ``root`` is no version."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, version: str) -> Path | None:
        path = self.root / version
        if path.resolve().parent != self.root.resolve() or not (path / DATA_PROFILE_FILE).is_file():
            return None
        return path

    def describe(self) -> str:
        return str(self.root)


class RegistryReferences:
    """Versions downloaded from the S3 registry into its cache directory, verified file by file.

    A version that is not a version id, is absent, or whose files fail to verify has no reference (for good: a
    version is immutable); anything else (S3 unreachable or refusing, a full cache disk) raises
    ReferenceUnavailableError so that the next measurement tries again.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def directory(self, version: str) -> Path | None:
        if not is_version(version):
            return None
        try:
            local = self.registry.download(version)
        except (VersionNotFoundError, IntegrityError) as exc:
            log.warning("model version %s has no usable reference in the registry: %s", version, exc)
            return None
        except (RegistryError, OSError) as exc:
            raise ReferenceUnavailableError(str(exc)) from exc
        path = local.path
        return path if (path / DATA_PROFILE_FILE).is_file() else None

    def describe(self) -> str:
        return f"s3://{self.registry.store.bucket} (model {self.registry.model_name})"
