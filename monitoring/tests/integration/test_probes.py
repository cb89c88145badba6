"""Probe endpoints of the Redis jobs against a real redis-server (/readyz follows Redis, /healthz does not), and the
jobs' settings: outside environment=local a job missing REDIS_URL or a bind address refuses to start, naming it."""

from __future__ import annotations

import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import spawn, stop
from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.probes import redis_ready, start_probe_server
from forkcast_monitoring.settings import DriftSettings, MonitoringSettings


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_readyz_follows_redis_and_healthz_does_not(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Gauge("forkcast_probe_test", "a metric of this server", registry=registry).set(3)
    with RedisServer(tmp_path) as redis_server:
        # 5 s (was 0.5): the Redis that is up must answer in time on a starved CI machine; the one that is down
        # below refuses the connection at once.
        server = start_probe_server("127.0.0.1", 0, registry, redis_ready(redis_server.url, timeout_s=5.0))
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
@pytest.mark.parametrize(
    ("settings_class", "redis_names"),
    [(MonitoringSettings, ["FORKCAST_EVENTS_REDIS_URL"]), (DriftSettings, ["REDIS_URL"])],
)
def test_job_outside_local_names_each_missing_setting(
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[MonitoringSettings | DriftSettings],
    redis_names: list[str],
) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as err:
        settings_class()
    refused = str(err.value).split("development defaults: ")[1].split(" [")[0].split(", ")
    assert refused == ["FORKCAST_METRICS_HOST", *redis_names]
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("FORKCAST_METRICS_HOST", "0.0.0.0")
    settings = settings_class()  # the twin: both set, the job starts; the events default to REDIS_URL
    assert settings.events_url == settings.redis_url == "redis://:pw@redis:6379/0"
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", "redis://:pw@events:6379/0")
    assert settings_class().events_url == "redis://:pw@events:6379/0"


@pytest.mark.usefixtures("clean_env")
def test_drift_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("FORKCAST_DRIFT_EVERY_S", "15")
    monkeypatch.setenv("FORKCAST_FEATURE_PREFIX", "fx")
    monkeypatch.setenv("FORKCAST_DRIFT_REFERENCE_ROOT", "/refs")
    s = DriftSettings()
    assert (s.drift_every_s, s.feature_prefix, str(s.drift_reference_root)) == (15.0, "fx", "/refs")


def names_its_redis(log: Path, redacted: str, refused: bool) -> bool:
    """``log`` names the Redis by its redacted URL and, when the password is refused, holds the retry warning."""
    text = log.read_text()
    warned = "WRONGPASS" in text or "invalid username-password" in text
    return redacted in text and (warned or not refused)


@pytest.mark.parametrize("program", ["forkcast-online-auc", "forkcast-drift"])
def test_a_job_never_logs_a_redis_password(
    program: str, tmp_path: Path, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """Issue 18.6: the jobs log which Redis they read through forkcast_contract.settings.redacted_url; run against
    a password-protected redis-server, once with the right password and once with a wrong one (the retry
    warning), the password appears nowhere in their output, the redacted URL does."""
    right, wrong = f"pw-{secrets.token_hex(8)}", f"pw-{secrets.token_hex(8)}"
    server = redis_server_factory(password=right)
    for password in (right, wrong):
        url = server.url.replace(right, password)
        env = {
            **os.environ,
            "FORKCAST_ENVIRONMENT": "local",
            "REDIS_URL": url,
            "FORKCAST_EVENTS_REDIS_URL": url,
            "FORKCAST_METRICS_PORT": str(free_port()),
            "FORKCAST_DRIFT_REFERENCE_ROOT": str(tmp_path),
            "FORKCAST_DRIFT_EVERY_S": "0.2",
        }
        log = tmp_path / f"{program}-{'right' if password == right else 'wrong'}.log"
        redacted = f"redis://:***@127.0.0.1:{server.port}/0"
        proc = spawn([str(Path(sys.executable).parent / program)], env=env, log=log)
        try:  # until the lines that name the Redis are logged (was a fixed 3 s: the jobs import a lot)
            logged = partial(names_its_redis, log, redacted, password == wrong)
            wait_until(logged, timeout_s=60, what=f"{program}'s Redis lines", proc=proc)
            # Then more cycles (0.2 s drift, 0.5 s retry), as the fixed 3 s gave: a password leaked by a later
            # cycle's line, not the first, must be in the log too.
            time.sleep(1.0)
        finally:
            stop(proc)
        out = log.read_text()
        assert password not in out, out
        assert redacted in out, out
        if password == wrong:
            assert "WRONGPASS" in out or "invalid username-password" in out, out  # the warning was logged
