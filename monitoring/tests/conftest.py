"""Fixtures: a real redis-server (the feature store's test launcher) and fast settings for the online-AUC job."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers shared by the test modules (importlib mode puts no test folder on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))

from forkcast_features.localredis import LocalRedis
from forkcast_monitoring.settings import MonitoringSettings


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        yield server


@pytest.fixture
def settings(redis_server: LocalRedis) -> MonitoringSettings:
    return MonitoringSettings(
        redis_url=redis_server.url,
        auc_window_s=600.0,
        auc_attribution_s=60.0,
        auc_min_samples=50,
        auc_min_per_class=5,
        auc_compute_every_s=0.0,
    )
