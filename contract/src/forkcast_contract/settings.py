"""Settings base for every forkcast service and tool.

Each service defines one ``Settings`` subclass (its own fields, the ``FORKCAST_`` prefix) and one cached getter.
The shared validator refuses development defaults outside a local environment, so a production pod fails at
start instead of running with, say, the demo API key or a public bind address.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["local", "staging", "production"]


class ForkcastSettings(BaseSettings):
    """Fields every service has; subclasses add their own."""

    model_config = SettingsConfigDict(env_prefix="FORKCAST_", extra="ignore", frozen=True)

    environment: Environment = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def unsafe_defaults(self) -> list[str]:
        """Names of settings still at a development-only value; subclasses extend this."""
        return []

    @model_validator(mode="after")
    def _refuse_unsafe_defaults_outside_local(self) -> ForkcastSettings:
        if self.environment != "local":
            unsafe = self.unsafe_defaults()
            if unsafe:
                raise ValueError(
                    f"environment={self.environment} but these settings keep development defaults: "
                    + ", ".join(unsafe)
                )
        return self
