"""Settings of the feature-store tools, from environment variables (one typed object, one cached getter)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field

from forkcast_contract.feature_store import DEFAULT_PREFIX
from forkcast_contract.settings import EventsRedisSettings

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


class FeatureStoreSettings(EventsRedisSettings):
    """``REDIS_URL`` (SPEC §8, no prefix) plus ``FORKCAST_FEATURE_*`` / ``FORKCAST_REDIS_CLUSTER``; live updates are
    logged to the events Redis (``FORKCAST_EVENTS_REDIS_URL``, else ``REDIS_URL``)."""

    redis_url: str = Field(
        default=LOCAL_REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "FORKCAST_REDIS_URL")
    )
    # True when REDIS_URL names one node of a Redis Cluster (the client then discovers the others).
    redis_cluster: bool = False
    feature_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9_.-]+$")
    # Rows per pipelined write batch; 20,000 measured fastest on the 2-core VM (see BENCHMARKS.md).
    feature_batch_rows: int = Field(default=20_000, gt=0)
    # How long a retired version stays readable before `gc` may delete it.
    feature_grace_seconds: int = Field(default=3600, ge=0)
    # Random rows compared byte-for-byte with the source after a load.
    feature_verify_sample: int = Field(default=2000, ge=0)
    redis_timeout_seconds: float = Field(default=5.0, gt=0)

    def unsafe_defaults(self) -> list[str]:
        return ["REDIS_URL"] if self.redis_url == LOCAL_REDIS_URL else []


@lru_cache(maxsize=1)
def get_settings() -> FeatureStoreSettings:
    return FeatureStoreSettings()
