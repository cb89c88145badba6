"""Probe endpoints of the Redis jobs against a real redis-server (/readyz follows Redis, /healthz does not), and the
jobs' settings: outside environment=local a job missing REDIS_URL or a bind address refuses to start, naming it."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.probes import redis_ready, start_probe_server
from forkcast_monitoring.settings import DriftSettings, MonitoringSettings


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_readyz_follows_redis_and_healthz_does_not() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    registry = CollectorRegistry()
    Gauge("forkcast_probe_test", "a metric of this server", registry=registry).set(3)
    with LocalRedis() as redis_server:
        server = start_probe_server("127.0.0.1", 0, registry, redis_ready(redis_server.url, timeout_s=0.5))
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert status(base + "/readyz") == (200, "ready\n")
        assert "forkcast_probe_test 3.0" in status(base + "/metrics")[1]
    try:  # redis-server stopped
        code, body = status(base + "/readyz")
        assert code == 503 and "redis unreachable" in body  # the twin: Redis gone, not ready, and why
        assert status(base + "/healthz") == (200, "ok\n")  # the job waits the outage out: no restart
        assert status(base + "/elsewhere")[0] == 404
    finally:
        server.shutdown()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FORKCAST_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("settings_class", [MonitoringSettings, DriftSettings])
def test_job_outside_local_names_each_missing_setting(
    monkeypatch: pytest.MonkeyPatch, settings_class: type[MonitoringSettings | DriftSettings]
) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as err:
        settings_class()
    assert "REDIS_URL" in str(err.value) and "FORKCAST_METRICS_HOST" in str(err.value)
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("FORKCAST_METRICS_HOST", "0.0.0.0")
    settings = settings_class()  # the twin: both set, the job starts
    assert settings.redis_url == "redis://:pw@redis:6379/0" and settings.metrics_host == "0.0.0.0"


@pytest.mark.usefixtures("clean_env")
def test_drift_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_DRIFT_EVERY_S", "15")
    monkeypatch.setenv("FORKCAST_FEATURE_PREFIX", "fx")
    monkeypatch.setenv("FORKCAST_DRIFT_REFERENCE_ROOT", "/refs")
    s = DriftSettings()
    assert (s.drift_every_s, s.feature_prefix, str(s.drift_reference_root)) == (15.0, "fx", "/refs")
