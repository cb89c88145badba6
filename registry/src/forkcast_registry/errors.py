"""Registry errors: each names the version or file concerned, so a failed CI job says what to look at."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error the registry raises on purpose."""


class RegistryUnavailableError(RegistryError):
    """S3 could not be reached (after retries), or refused the credentials."""


class BucketMissingError(RegistryError):
    """The bucket does not exist and creating it was not asked for."""


class VersionExistsError(RegistryError):
    """A publish would overwrite an existing version (or one of its files with other bytes)."""


class VersionNotFoundError(RegistryError):
    """No complete version of that name: absent, or its upload never reached the manifest."""


class IntegrityError(RegistryError):
    """A downloaded or cached file does not match the manifest's sha256/size."""

    def __init__(self, version: str, file: str, detail: str) -> None:
        super().__init__(f"version {version}: {file} failed verification ({detail})")
        self.version = version
        self.file = file


class InvalidArtifactError(RegistryError):
    """A file handed to publish is not what the format says (missing, wrong name, bad manifest)."""
