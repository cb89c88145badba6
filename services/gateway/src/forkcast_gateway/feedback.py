"""POST /feedback: click / no-click events for served recommendations, appended to a bounded Redis stream.

Idempotent per (request id, restaurant id): one Lua script sets a marker with NX and a TTL and appends only if the
marker was new, atomically, so a client retrying after a timeout never counts a click twice (online AUC would
otherwise over-weight flaky clients). The stream is capped with ``XADD … MAXLEN ~``.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from forkcast_contract.streams import FEEDBACK_DEDUP_PREFIX
from forkcast_gateway.schemas import FeedbackEvent

_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    'rid', ARGV[3], 'restaurant', ARGV[4], 'clicked', ARGV[5], 'ts', ARGV[6])
end
return false
"""


class FeedbackWriter:
    def __init__(self, client: aioredis.Redis, stream: str, maxlen: int, dedup_ttl_s: int) -> None:
        self.client, self.stream, self.maxlen, self.ttl = client, stream, maxlen, dedup_ttl_s
        self.script = client.register_script(_SCRIPT)

    async def write(self, event: FeedbackEvent) -> str | None:
        """The stream entry id, or None when this (request id, restaurant id) was already recorded."""
        marker = f"{FEEDBACK_DEDUP_PREFIX}{event.request_id}:{event.restaurant_id}"
        entry = await self.script(
            keys=[marker, self.stream],
            args=[
                self.ttl,
                self.maxlen,
                event.request_id,
                event.restaurant_id,
                int(event.clicked),
                f"{event.time:.6f}",
            ],
        )
        if entry is None:
            return None
        return entry.decode() if isinstance(entry, bytes) else str(entry)
