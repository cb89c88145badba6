"""Settings of the monitoring jobs (``FORKCAST_`` prefix, from the environment; CLI options override them)."""

from __future__ import annotations

from functools import lru_cache

from forkcast_contract.settings import ForkcastSettings


class MonitoringSettings(ForkcastSettings):
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Online AUC
    auc_group: str = "online-auc"
    auc_consumer: str = "online-auc-0"
    auc_window_s: float = 3600.0
    auc_attribution_s: float = 600.0
    auc_max_skew_s: float = 30.0
    auc_min_samples: int = 1000
    auc_min_per_class: int = 20
    auc_max_samples: int = 200_000
    auc_compute_every_s: float = 5.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108

    def unsafe_defaults(self) -> list[str]:
        return ["metrics_host"] if self.metrics_host == "127.0.0.1" else []


@lru_cache(maxsize=1)
def get_settings() -> MonitoringSettings:
    return MonitoringSettings()
