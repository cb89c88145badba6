"""Settings of the gateway, from the environment only (SPEC §8); the README documents each variable.

``REDIS_URL`` holds the rate-limit buckets; ``FORKCAST_EVENTS_REDIS_URL`` the feedback stream and its dedup markers
(unset: ``REDIS_URL``, so one Redis still works; see forkcast_contract.settings.EventsRedisSettings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from forkcast_contract.api import MAX_BODY_BYTES_DEFAULT, MAX_CANDIDATES_DEFAULT
from forkcast_contract.feature_store import DEFAULT_PREFIX
from forkcast_contract.settings import DEV_REDIS_URL, EventsRedisSettings
from forkcast_contract.streams import (
    FEATURE_UPDATES_MAXLEN,
    FEATURE_UPDATES_STREAM,
    FEEDBACK_DEDUP_TTL_S,
    FEEDBACK_MAXLEN,
    FEEDBACK_STREAM,
)

DEV_UPSTREAMS = "http://127.0.0.1:8001"
# ingress-nginx's default ``large-client-header-buffers`` is "4 8k" (kubernetes/ingress-nginx,
# docs/user-guide/nginx-configuration/configmap.md): at most 4 × 8 KiB of request line and headers. The same total
# here, so a request that ingress admits is never refused by the gateway behind it.
MAX_HEADER_BYTES_DEFAULT = 4 * 8 * 1024


class GatewaySettings(EventsRedisSettings):
    """Where to forward, who may call, how much, and how long anything may take."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # `URL[,URL…]` (one group "stable") or `NAME*WEIGHT=URL[,URL…];NAME*WEIGHT=URL…` (see upstreams.py); a URL
    # `dns+http://NAME:PORT` stands for every A record of NAME (a headless Service: one per ready pod).
    upstreams: str = DEV_UPSTREAMS
    # DNS endpoints: re-resolved every dns_refresh_s, after a failure or a connection error every dns_retry_s;
    # dns_server `HOST[:PORT]` replaces the system resolver (/etc/resolv.conf) — for tests and odd clusters.
    dns_refresh_s: float = Field(default=2.0, gt=0, le=60)
    dns_retry_s: float = Field(default=0.5, gt=0, le=60)
    dns_timeout_s: float = Field(default=1.0, gt=0, le=30)
    dns_server: str | None = None
    redis_url: str = Field(default=DEV_REDIS_URL, validation_alias="REDIS_URL")
    redis_timeout_s: float = Field(default=0.1, gt=0, le=30)
    api_keys_file: Path | None = None
    # The secrets that sign request ids (request_ids.py), shared by every replica; unset → a random secret per
    # process, which unsafe_defaults refuses outside local.
    request_id_key_file: Path | None = None
    # Authentication can only be switched off in a local environment (unsafe_defaults refuses it elsewhere).
    auth_disabled: bool = False
    keys_reload_s: float = Field(default=1.0, gt=0)
    rate_per_s: float = Field(default=2000.0, gt=0)
    rate_burst: int = Field(default=4000, ge=1)
    # /feedback's own bucket per key, lower than /recommend's: one feedback POST per shown restaurant of a
    # sampled share of responses, not per request; at 200/s a key leaves at most 200 × FEEDBACK_DEDUP_TTL_S
    # (630 s) ≈ 126,000 dedup markers alive (≈ 22 MB at the 172 B per marker measured in
    # manifests/base/redis/events.conf), where 2,000/s for 7 days filled Redis (issue 18.2).
    feedback_rate_per_s: float = Field(default=200.0, gt=0)
    feedback_rate_burst: int = Field(default=400, ge=1)
    max_candidates: int = Field(default=MAX_CANDIDATES_DEFAULT, ge=1)
    # One cap and one deadline for the body of every route (body.py): 413 past the cap, 408 past the deadline.
    max_body_bytes: int = Field(default=MAX_BODY_BYTES_DEFAULT, ge=1024)
    body_timeout_s: float = Field(default=5.0, gt=0)
    # The header section of every request (header_bounds.py): 431 past max_header_bytes, 408 when it is not
    # complete header_timeout_s after its first byte (the first request: after the connection opened); unset →
    # body_timeout_s, one deadline for each part of a request (header_deadline_s).
    max_header_bytes: int = Field(default=MAX_HEADER_BYTES_DEFAULT, ge=1024)
    header_timeout_s: float | None = Field(default=None, gt=0)
    connect_timeout_s: float = Field(default=0.05, gt=0)
    upstream_timeout_s: float = Field(default=1.0, gt=0)
    max_in_flight: int = Field(default=256, ge=1)
    pool_size: int = Field(default=64, ge=1)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=2.0, gt=0)
    feedback_stream: str = FEEDBACK_STREAM
    feedback_maxlen: int = Field(default=FEEDBACK_MAXLEN, ge=1)
    feedback_dedup_ttl_s: int = Field(default=FEEDBACK_DEDUP_TTL_S, ge=1)
    access_log: bool = True
    # The admin feature live-update endpoint writes into the feature store: its Redis (default: REDIS_URL) and
    # key prefix (the inference service's FORKCAST_FEATURE_PREFIX).
    features_redis_url: str | None = None
    # FORKCAST_REDIS_CLUSTER: that features Redis is a Redis Cluster (the URL names any node), as for the loader and
    # the inference service; the admin update then writes every restaurant copy (feature_updates.py).
    redis_cluster: bool = False
    feature_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    # Each applied admin update is logged to this stream in the events Redis (the lake's served log reads it).
    feature_updates_stream: str = FEATURE_UPDATES_STREAM
    feature_updates_maxlen: int = Field(default=FEATURE_UPDATES_MAXLEN, ge=1)

    @property
    def header_deadline_s(self) -> float:
        """The header-section deadline in force: FORKCAST_HEADER_TIMEOUT_S, else FORKCAST_BODY_TIMEOUT_S."""
        return self.body_timeout_s if self.header_timeout_s is None else self.header_timeout_s

    def unsafe_defaults(self) -> list[str]:
        unsafe = []
        if self.auth_disabled:
            unsafe.append("FORKCAST_AUTH_DISABLED")
        if self.api_keys_file is None:
            unsafe.append("FORKCAST_API_KEYS_FILE")
        if self.request_id_key_file is None:
            unsafe.append("FORKCAST_REQUEST_ID_KEY_FILE")
        if self.redis_url == DEV_REDIS_URL:
            unsafe.append("REDIS_URL")
        if self.upstreams == DEV_UPSTREAMS:
            unsafe.append("FORKCAST_UPSTREAMS")
        return unsafe


@lru_cache(maxsize=1)
def get_settings() -> GatewaySettings:
    return GatewaySettings()
