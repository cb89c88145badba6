"""Trimming a stream only below what every reader is done with: the lake's committed position and every consumer
group's unread or unacknowledged entries (the online-AUC job's).

Redis 7.0 (the version here) has no ``XTRIM … ACKED`` (that came with 8.2's XDELEX/ACKED options), so the bound is
computed: for each consumer group (the compaction has none of its own), ``XINFO GROUPS`` gives ``pending`` and
``last-delivered-id``; a group with pending entries holds the stream from its oldest pending id (``XPENDING`` summary
form, the smallest id in its PEL), a group without holds it from the entry after ``last-delivered-id``. The lake
holds it from the entry after its committed position. ``XTRIM MINID`` with the smallest of these bounds then
removes exactly the entries everyone is done with ("XTRIM", redis.io/docs/latest/commands/xtrim: entries with an id
lower than MINID are evicted). A third bound keeps the newest ``keep_s`` seconds of every stream (ids are
millisecond times): the drift job samples the newest predictions with XREVRANGE, outside any group. The exact form
is used (no ``~``), so a test can tell a bound that held from one that
was merely rounded down. A group can only move its bounds forward between the XINFO and the XTRIM (XREADGROUP and
XACK advance them), so the trim never overtakes a reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from forkcast_lake.stream_ids import ZERO, StreamId


@dataclass(frozen=True)
class TrimBound:
    """The id below which a stream may be trimmed, and which reader set it (for logs and tests)."""

    min_id: StreamId
    held_by: str


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def safe_bound(
    client: redis.Redis, stream: str, committed: StreamId | None, keep_since: StreamId = ZERO
) -> TrimBound:
    """The smallest id any reader still needs (see the module docstring); ``keep_since``: keep every entry from
    this id on (the recent window), ZERO for none."""
    bounds = [TrimBound(ZERO if committed is None else committed.next(), "lake")]
    if keep_since != ZERO:
        bounds.append(TrimBound(keep_since, "the recent window"))
    for info in client.xinfo_groups(stream):
        name = _field(info, "name")
        name = name.decode() if isinstance(name, bytes) else str(name)
        if int(_field(info, "pending")) > 0:
            summary = client.xpending(stream, name)
            oldest = summary["min"]
            bounds.append(TrimBound(StreamId.parse(oldest), f"group {name} (pending)"))
        else:
            last = StreamId.parse(_field(info, "last-delivered-id"))
            bounds.append(TrimBound(last.next(), f"group {name}"))
    return min(bounds, key=lambda b: b.min_id)


def trim(
    client: redis.Redis, stream: str, committed: StreamId | None, keep_since: StreamId = ZERO
) -> tuple[int, TrimBound]:
    """Trim ``stream`` below the safe bound; returns how many entries went and the bound."""
    bound = safe_bound(client, stream, committed, keep_since)
    if bound.min_id == ZERO:
        return 0, bound
    removed = client.xtrim(stream, minid=str(bound.min_id), approximate=False)
    return int(removed), bound
