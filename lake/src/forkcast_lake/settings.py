"""Lake settings from the environment: the registry's S3 settings plus where the lake lives.

The S3 connection (``S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) is the one
the model registry already reads (:class:`forkcast_registry.settings.RegistrySettings`); the lake inherits those
fields rather than declaring them again, so one Kubernetes secret configures both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from forkcast_registry.settings import RegistrySettings


class LakeSettings(RegistrySettings):
    """S3 connection (inherited) and the lake's own knobs."""

    # Where `forkcast-lake` commands put their tables when no URI is given (a prefix: tables live beneath it).
    lake_uri: str = Field(default="s3://forkcast-lake", validation_alias="FORKCAST_LAKE_URI", min_length=1)
    # How often a writer that lost a commit race re-reads the log and tries again before giving up (delta-rs
    # retries conflict-free appends itself; this bounds our own retry of the whole write).
    # Where readers put the verified files of an s3:// dataset snapshot, one folder per fingerprint (reused).
    dataset_cache: Path = Field(
        default=Path.home() / ".cache" / "forkcast" / "datasets", validation_alias="FORKCAST_DATASET_CACHE"
    )
    commit_attempts: int = Field(default=5, ge=1, validation_alias="FORKCAST_LAKE_COMMIT_ATTEMPTS")

    def unsafe_defaults(self) -> list[str]:
        # The registry flags its default FORKCAST_BUCKET; a lake table's bucket is always in its s3:// URI.
        return []


@lru_cache(maxsize=1)
def get_settings() -> LakeSettings:
    return LakeSettings()
