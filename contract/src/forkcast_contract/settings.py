"""Settings base for every forkcast service and tool.

Each service defines one ``Settings`` subclass (its own fields, the ``FORKCAST_`` prefix) and one cached getter.
The shared validator refuses development defaults outside a local environment, so a production pod fails at
start instead of running with, say, the demo API key or a public bind address. ``FORKCAST_ENVIRONMENT`` defaults
to ``production`` (issue 18.6): a pod that forgets to set it gets the strict checks, never the lax ones; tests and
the local platform set ``local`` explicitly.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["local", "staging", "production"]

DEV_REDIS_URL = "redis://127.0.0.1:6379/0"


class ForkcastSettings(BaseSettings):
    """Fields every service has; subclasses add their own."""

    model_config = SettingsConfigDict(env_prefix="FORKCAST_", extra="ignore", frozen=True)

    environment: Environment = "production"
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


class EventsRedisSettings(ForkcastSettings):
    """A service that writes or reads the event streams (prediction events, feedback, feedback dedup markers).

    ``REDIS_URL`` is the features Redis; ``FORKCAST_EVENTS_REDIS_URL`` the events Redis. Unset, the events go to
    ``REDIS_URL``, so a one-Redis setup (a laptop, the tests) still works; the cluster sets both, so that a flood of
    events can neither evict nor OOM the features a recommendation needs (issue 18.2). Either URL may carry an ACL
    ``user:password@``: log them only through :func:`redacted_url`.
    """

    redis_url: str = Field(default=DEV_REDIS_URL, validation_alias=AliasChoices("redis_url", "REDIS_URL"))
    events_redis_url: str | None = None

    @property
    def events_url(self) -> str:
        """Where the event streams live: FORKCAST_EVENTS_REDIS_URL, else REDIS_URL."""
        return self.events_redis_url or self.redis_url


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://app:***@redis:6379/0``), for logs and errors.

    Both places redis-py reads a password from are covered: the userinfo and a ``password`` query argument
    (redis.connection.parse_url hands every query argument to the connection, ``?password=…`` included).
    """
    parts = urlsplit(url)
    if parts.query:
        query = [
            (name, "***" if name == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    return urlunsplit(parts)
