"""The S3 model registry (SPEC §4): immutable, manifest-verified model versions. No torch, no MLflow here."""

from forkcast_registry.errors import (
    BucketMissingError,
    IntegrityError,
    InvalidArtifactError,
    RegistryError,
    RegistryUnavailableError,
    VersionExistsError,
    VersionNotFoundError,
)
from forkcast_registry.registry import LocalVersion, ModelRegistry
from forkcast_registry.settings import RegistrySettings, get_settings

__all__ = [
    "BucketMissingError",
    "IntegrityError",
    "InvalidArtifactError",
    "LocalVersion",
    "ModelRegistry",
    "RegistryError",
    "RegistrySettings",
    "RegistryUnavailableError",
    "VersionExistsError",
    "VersionNotFoundError",
    "get_settings",
]
