"""The shared settings base refuses development defaults outside a local environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from forkcast_contract.settings import ForkcastSettings


class _DemoSettings(ForkcastSettings):
    api_key: str = "demo"

    def unsafe_defaults(self) -> list[str]:
        return ["api_key"] if self.api_key == "demo" else []


def test_local_accepts_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORKCAST_ENVIRONMENT", raising=False)
    assert _DemoSettings().environment == "local"


def test_production_refuses_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="api_key"):
        _DemoSettings()
    monkeypatch.setenv("FORKCAST_API_KEY", "a-real-secret")
    assert _DemoSettings().api_key == "a-real-secret"
