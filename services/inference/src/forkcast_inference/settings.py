"""Settings of the inference service, from the environment only (SPEC §8); see the README for each variable.

``REDIS_URL`` is the feature store; prediction events go to ``FORKCAST_EVENTS_REDIS_URL`` (unset: ``REDIS_URL``, so
one Redis still works; see forkcast_contract.settings.EventsRedisSettings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from forkcast_contract.api import MAX_BODY_BYTES_DEFAULT, MAX_CANDIDATES_DEFAULT
from forkcast_contract.feature_store import DEFAULT_PREFIX
from forkcast_contract.registry_format import (
    ENV_MODEL_MANIFEST_SHA256,
    ENV_MODEL_SHA256,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
)
from forkcast_contract.settings import EventsRedisSettings
from forkcast_contract.streams import PREDICTIONS_MAXLEN, PREDICTIONS_STREAM


class InferenceSettings(EventsRedisSettings):
    """Where the model and the features come from, and how long a request may wait for Redis."""

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # FORKCAST_REDIS_CLUSTER, the feature store's setting of the same name: REDIS_URL names one node of a Redis
    # Cluster and the reader discovers the others (forkcast_inference.cluster_features).
    redis_cluster: bool = False
    feature_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    # The release written by promotion (contract registry_format): the s3://…/<version>/ directory and pins.
    model_uri: str = Field(default="", validation_alias=ENV_MODEL_URI)
    model_version: str = Field(default="", validation_alias=ENV_MODEL_VERSION)
    model_sha256: str = Field(default="", validation_alias=ENV_MODEL_SHA256)
    model_manifest_sha256: str = Field(default="", validation_alias=ENV_MODEL_MANIFEST_SHA256)
    # Development alternative to model_uri: a local directory holding the version's files.
    model_dir: Path | None = None
    # A model that failed to load (S3 unreachable, a bad version) is tried again in the background, backing off from
    # 1 s to this, so a replica that started during an S3 outage becomes ready when S3 returns.
    model_retry_max_s: float = Field(default=15.0, gt=0)
    # Every Redis call (connect and read) is bounded by this: Redis down or stalled answers 503 in about this
    # long, never a hang.
    redis_timeout_s: float = Field(default=0.25, gt=0, le=30)
    max_candidates: int = Field(default=MAX_CANDIDATES_DEFAULT, ge=1)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES_DEFAULT, ge=1024)
    # A body not complete within this is answered 408, like the gateway's (a slow drip holds no worker).
    body_timeout_s: float = Field(default=5.0, gt=0)
    events_stream: str = PREDICTIONS_STREAM
    events_maxlen: int = Field(default=PREDICTIONS_MAXLEN, ge=1)
    events_flush_s: float = Field(default=0.05, gt=0)
    events_buffer: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _events_beside_a_cluster(self) -> InferenceSettings:
        # The event sink is a single-node client: on a Cluster node its XADD would be answered MOVED for most
        # stream names and every event lost. The cluster runs a separate events Redis anyway (issue 18.2).
        if self.redis_cluster and self.events_redis_url is None:
            raise ValueError(
                "FORKCAST_REDIS_CLUSTER=1 needs FORKCAST_EVENTS_REDIS_URL (a single Redis for the prediction events)"
            )
        return self

    @field_validator("model_dir")
    @classmethod
    def _absolute_model_dir(cls, value: Path | None) -> Path | None:
        # The model loader builds file URIs, which must be absolute: a relative FORKCAST_MODEL_DIR means relative
        # to the working directory at start (it left the service unready forever before).
        return value.resolve() if value is not None else None

    def unsafe_defaults(self) -> list[str]:
        unsafe = []
        if self.model_dir is not None:
            unsafe.append("FORKCAST_MODEL_DIR")
        if self.redis_url.startswith("redis://127.0.0.1"):
            unsafe.append("REDIS_URL")
        # A release without both sha256 pins would serve whatever bytes S3 holds under that version (issue 18.6):
        # outside local, the model and its manifest must be pinned as promotion writes them.
        if self.model_uri and not self.model_sha256:
            unsafe.append(ENV_MODEL_SHA256)
        if self.model_uri and not self.model_manifest_sha256:
            unsafe.append(ENV_MODEL_MANIFEST_SHA256)
        return unsafe


@lru_cache(maxsize=1)
def get_settings() -> InferenceSettings:
    return InferenceSettings()
