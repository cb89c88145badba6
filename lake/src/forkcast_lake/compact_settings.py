"""Settings of ``forkcast-lake compact``: the lake's S3 (inherited), the events Redis, batching and the fault hook.

Batches close at ``FORKCAST_COMPACT_BATCH_ENTRIES`` entries of one stream or ``FORKCAST_COMPACT_BATCH_SECONDS``
after their first entry, whichever comes first: a busy platform writes few large files, a quiet one still one file
per stream per interval, never one per second. ``FORKCAST_COMPACT_FAULT`` is for tests only (the kill-mid-compaction
test): ``<point>:<file>`` makes the job write ``file`` and stop dead at ``point`` of its first non-empty batch, so the
test can SIGKILL it there; it is refused outside ``FORKCAST_ENVIRONMENT=local``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final, Literal, cast

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from forkcast_contract.settings import EventsRedisSettings
from forkcast_lake.settings import LakeSettings

FaultPoint = Literal["before-commit", "after-commit", "after-trim"]
FAULT_POINTS: Final = ("before-commit", "after-commit", "after-trim")


class CompactSettings(LakeSettings, EventsRedisSettings):
    """Where the streams and tables are, how large a batch grows, and how the job reports."""

    # Fields are also settable by name (tests, the benchmark): ``CompactSettings(batch_entries=…)``.
    model_config = SettingsConfigDict(**{**LakeSettings.model_config, "populate_by_name": True})

    batch_entries: int = Field(default=50_000, ge=1, validation_alias="FORKCAST_COMPACT_BATCH_ENTRIES")
    batch_seconds: float = Field(default=60.0, gt=0, validation_alias="FORKCAST_COMPACT_BATCH_SECONDS")
    # XREAD COUNT per stream per round trip, and how long one blocks when the streams are idle.
    read_count: int = Field(default=10_000, ge=1, validation_alias="FORKCAST_COMPACT_READ_COUNT")
    block_ms: int = Field(default=1000, ge=1, validation_alias="FORKCAST_COMPACT_BLOCK_MS")
    # Entries younger than this stay in the streams even when committed: the drift job samples the newest 5,000
    # predictions with XREVRANGE (no consumer group); an hour keeps about what the producers' MAXLEN caps keep
    # (forkcast_contract.streams: predictions 100,000 ≈ 55 min at 30 req/s; feedback, ~10 per request, 1,000,000 ≈
    # 55 min at 300/s). 0: trim everything committed and read.
    keep_seconds: float = Field(default=3600.0, ge=0, validation_alias="FORKCAST_COMPACT_KEEP_SECONDS")
    metrics_host: str = Field(default="127.0.0.1", validation_alias="FORKCAST_METRICS_HOST")
    metrics_port: int = Field(default=9111, ge=0, le=65535, validation_alias="FORKCAST_METRICS_PORT")
    fault: str | None = Field(default=None, validation_alias="FORKCAST_COMPACT_FAULT")

    @field_validator("fault")
    @classmethod
    def _fault_format(cls, value: str | None) -> str | None:
        if value is not None:
            point, _, path = value.partition(":")
            if point not in FAULT_POINTS or not path:
                raise ValueError(
                    f"FORKCAST_COMPACT_FAULT must be <{'|'.join(FAULT_POINTS)}>:<file>, not {value!r}"
                )
        return value

    @property
    def fault_point(self) -> tuple[FaultPoint, Path] | None:
        if self.fault is None:
            return None
        point, _, path = self.fault.partition(":")
        return cast(FaultPoint, point), Path(path)

    def unsafe_defaults(self) -> list[str]:
        return [*super().unsafe_defaults(), *(["FORKCAST_COMPACT_FAULT"] if self.fault else [])]


@lru_cache(maxsize=1)
def get_settings() -> CompactSettings:
    return CompactSettings()
