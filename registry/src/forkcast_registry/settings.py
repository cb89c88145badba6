"""Registry settings from the environment (SPEC §8), so the same code talks to AWS, SeaweedFS or MinIO.

The S3 variables keep their standard names (``S3_ENDPOINT_URL``, ``AWS_*``), which boto3 users and Kubernetes
secrets already use; only the forkcast-specific ones carry the ``FORKCAST_`` prefix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field

from forkcast_contract.registry_format import DEFAULT_MODEL_NAME
from forkcast_contract.settings import ForkcastSettings


class RegistrySettings(ForkcastSettings):
    """Where the registry lives and how long a caller waits for it."""

    endpoint_url: str | None = Field(default=None, validation_alias="S3_ENDPOINT_URL")
    access_key_id: str | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    secret_access_key: str | None = Field(default=None, validation_alias="AWS_SECRET_ACCESS_KEY")
    region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    bucket: str = Field(default="forkcast", validation_alias="FORKCAST_BUCKET", min_length=3)
    model_name: str = Field(default=DEFAULT_MODEL_NAME, validation_alias="FORKCAST_MODEL_NAME", min_length=1)
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "forkcast" / "models", validation_alias="FORKCAST_MODEL_CACHE"
    )
    # Each S3 call is retried with exponential backoff (botocore "standard" mode) up to this many attempts, each
    # bounded by the timeouts: an unreachable S3 fails in about attempts x connect_timeout, never hangs.
    max_attempts: int = Field(default=4, ge=1, validation_alias="FORKCAST_S3_MAX_ATTEMPTS")
    connect_timeout_s: float = Field(default=3.0, gt=0, validation_alias="FORKCAST_S3_CONNECT_TIMEOUT_S")
    read_timeout_s: float = Field(default=30.0, gt=0, validation_alias="FORKCAST_S3_READ_TIMEOUT_S")

    def unsafe_defaults(self) -> list[str]:
        return ["FORKCAST_BUCKET"] if self.bucket == "forkcast" and self.endpoint_url is None else []


@lru_cache(maxsize=1)
def get_settings() -> RegistrySettings:
    return RegistrySettings()
