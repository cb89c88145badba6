"""Settings of the monitoring jobs (``FORKCAST_`` prefix, from the environment; CLI options override them).

One class per job, so that a pod sets exactly what its job reads and a job outside ``environment=local`` refuses
the development defaults (a loopback bind address, the local Redis, a webhook without authentication) at start,
naming the variable to set, instead of running half-configured.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from forkcast_contract.feature_store import DEFAULT_PREFIX
from forkcast_contract.settings import DEV_REDIS_URL, EventsRedisSettings, ForkcastSettings
from forkcast_contract.streams import ATTRIBUTION_WINDOW_S, MAX_CLOCK_SKEW_S

LOOPBACK = "127.0.0.1"


class MonitoringSettings(EventsRedisSettings):
    """The online-AUC job (forkcast-online-auc): both streams from the events Redis (``events_url``:
    FORKCAST_EVENTS_REDIS_URL, else REDIS_URL)."""

    # Online AUC
    auc_group: str = "online-auc"
    auc_consumer: str = "online-auc-0"
    auc_window_s: float = 3600.0
    auc_attribution_s: float = float(ATTRIBUTION_WINDOW_S)
    auc_max_skew_s: float = float(MAX_CLOCK_SKEW_S)
    auc_min_samples: int = 1000
    auc_min_per_class: int = 20
    auc_max_samples: int = Field(default=200_000, ge=2)
    # The most of any AUC window's pairs one API key may hold (issue 18.1; the rule is in window.py). 1 turns the
    # cap off: a deployment whose traffic all comes through one key must set it, or that key's pairs give no AUC.
    auc_max_key_share: float = Field(default=0.25, gt=0, le=1)
    auc_compute_every_s: float = 5.0
    metrics_host: str = LOOPBACK
    metrics_port: int = Field(default=9108, ge=1, le=65535)

    def unsafe_defaults(self) -> list[str]:
        unsafe = ["FORKCAST_METRICS_HOST"] if self.metrics_host == LOOPBACK else []
        return unsafe + (["FORKCAST_EVENTS_REDIS_URL"] if self.events_url == DEV_REDIS_URL else [])


class DriftSettings(EventsRedisSettings):
    """The drift job (forkcast-drift). Its references come from ``drift_reference_root`` when set (one directory
    per model version, as ``forkcast-retrain export`` writes them), otherwise from the model registry in S3, which
    is configured by forkcast_registry's own settings (S3_ENDPOINT_URL, AWS_*, FORKCAST_BUCKET,
    FORKCAST_MODEL_CACHE). It samples prediction events from the events Redis (``events_url``) and reads the
    features they name from the features Redis (``redis_url``, REDIS_URL)."""

    feature_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    # FORKCAST_REDIS_CLUSTER: the features Redis is a Redis Cluster (REDIS_URL names any node), as for the loader.
    redis_cluster: bool = False
    drift_reference_root: Path | None = None
    drift_sample: int = Field(default=5000, ge=1)
    drift_min_events: int = Field(default=200, ge=1)
    drift_every_s: float = Field(default=60.0, gt=0)
    metrics_host: str = LOOPBACK
    metrics_port: int = Field(default=9110, ge=1, le=65535)

    def unsafe_defaults(self) -> list[str]:
        unsafe = ["FORKCAST_METRICS_HOST"] if self.metrics_host == LOOPBACK else []
        unsafe += ["REDIS_URL"] if self.redis_url == DEV_REDIS_URL else []
        return unsafe + (["FORKCAST_EVENTS_REDIS_URL"] if self.events_redis_url == DEV_REDIS_URL else [])


class ReceiverSettings(ForkcastSettings):
    """The alert receiver (forkcast-alert-receiver): where it listens, whom it trusts, which pipeline it starts.

    ``gitlab_url``, ``gitlab_project_id`` and ``gitlab_token_file`` have no default: ``missing()`` names those
    that neither the environment nor the command line set, and the CLI refuses to start without them; outside
    environment=local the class itself refuses them missing (unsafe_defaults), as a pod sets no options.
    """

    host: str = LOOPBACK
    port: int = Field(default=9109, ge=1, le=65535)
    # /metrics on a port of its own (issue 18.5): the NetworkPolicy admits Prometheus here and Alertmanager alone
    # on ``port``, the webhook that starts pipelines. 9108, 9110 and 9111 are online-auc, drift and lake-compact.
    metrics_port: int = Field(default=9112, ge=1, le=65535)
    gitlab_url: str | None = None
    gitlab_project_id: str | None = None
    gitlab_ref: str = Field(default="main", min_length=1)
    # The pipeline trigger token (mounted Secret forkcast-gitlab-trigger, key token); never an env var or argument.
    gitlab_token_file: Path | None = None
    # The bearer token Alertmanager presents (mounted Secret forkcast-alert-receiver, key token). Unset means no
    # authentication, which unsafe_defaults refuses outside environment=local.
    webhook_token_file: Path | None = None
    cooldown_s: float = Field(default=6 * 3600.0, ge=0)
    # How long a firing alert's fingerprint is remembered (no second trigger for it meanwhile): longer than the
    # cooldown and Alertmanager's repeat interval (1 h on the retrain route), short enough to bound memory.
    seen_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # Alertmanager's webhook body for one group: ~1 KiB per alert, so 1 MiB holds hundreds of alerts.
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # How long one request may take to arrive: a client that stalls is cut off instead of holding a thread.
    request_timeout_s: float = Field(default=10.0, gt=0)

    def missing(self) -> list[str]:
        """Environment variables of required settings that are unset."""
        required = {
            "FORKCAST_GITLAB_URL": self.gitlab_url,
            "FORKCAST_GITLAB_PROJECT_ID": self.gitlab_project_id,
            "FORKCAST_GITLAB_TOKEN_FILE": self.gitlab_token_file,
        }
        return [name for name, value in required.items() if not value]

    def unsafe_defaults(self) -> list[str]:
        """Outside environment=local the required settings must come from the environment (a pod has no CLI)."""
        unsafe = ["FORKCAST_HOST"] if self.host == LOOPBACK else []
        unsafe += ["FORKCAST_WEBHOOK_TOKEN_FILE"] if self.webhook_token_file is None else []
        return unsafe + self.missing()


@lru_cache(maxsize=1)
def get_settings() -> MonitoringSettings:
    return MonitoringSettings()
