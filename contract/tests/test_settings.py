"""The shared settings base refuses development defaults outside a local environment, and is strict by default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from forkcast_contract.settings import EventsRedisSettings, ForkcastSettings, redacted_url


class _DemoSettings(ForkcastSettings):
    api_key: str = "demo"

    def unsafe_defaults(self) -> list[str]:
        return ["api_key"] if self.api_key == "demo" else []


def test_local_accepts_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    assert _DemoSettings().api_key == "demo"


def test_environment_defaults_to_production(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18.6: a pod that sets no FORKCAST_ENVIRONMENT gets the strict checks (it was `local` before)."""
    monkeypatch.delenv("FORKCAST_ENVIRONMENT", raising=False)
    with pytest.raises(ValidationError, match=r"environment=production but .* development defaults: api_key"):
        _DemoSettings()


def test_production_refuses_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="api_key"):
        _DemoSettings()
    monkeypatch.setenv("FORKCAST_API_KEY", "a-real-secret")
    assert _DemoSettings().api_key == "a-real-secret"


def test_events_redis_defaults_to_the_features_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("REDIS_URL", "redis://features:6379/0")
    monkeypatch.delenv("FORKCAST_EVENTS_REDIS_URL", raising=False)
    assert EventsRedisSettings().events_url == "redis://features:6379/0"
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", "redis://events:6379/0")
    assert EventsRedisSettings().events_url == "redis://events:6379/0"


def test_redacted_url_hides_the_password_only() -> None:
    assert redacted_url("redis://gateway:s3cret@events:6379/0") == "redis://gateway:***@events:6379/0"
    assert redacted_url("redis://:s3cret@events/1") == "redis://:***@events/1"
    assert redacted_url("redis://events:6379/0") == "redis://events:6379/0"


def test_redacted_url_hides_a_password_given_as_a_query_parameter() -> None:
    """redis-py takes ``?password=`` as well as ``user:password@`` (redis.connection.parse_url passes every query
    argument on); before the attacker review of issue 18.6 the query form was logged as written."""
    assert (
        redacted_url("redis://app@events:6379/0?password=s3cret&socket_timeout=1")
        == "redis://app@events:6379/0?password=***&socket_timeout=1"
    )
    assert redacted_url("redis://events:6379/0?socket_timeout=1") == "redis://events:6379/0?socket_timeout=1"
