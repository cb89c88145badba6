"""The feedback stream writer: click / no-click events appended to a bounded Redis stream in the events Redis.

Idempotent per (request id, restaurant id): one Lua script sets a marker with NX and a TTL and appends only if the
marker was new, atomically, so a client retrying after a timeout never counts a click twice (online AUC would
otherwise over-weight flaky clients). The stream is capped with ``XADD … MAXLEN ~``; the marker lives
``FEEDBACK_DEDUP_TTL_S`` (the online-AUC attribution window plus clock skew, forkcast_contract.streams), not the
7 days it did before issue 18.2. The route (routes/feedback.py) checks that the caller owns the request id first.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from forkcast_contract.streams import FEEDBACK_DEDUP_PREFIX, FEEDBACK_FIELDS, NO_KEY_ID
from forkcast_gateway.schemas import FeedbackEvent

# Field names from the contract, in its order: XADD key 'rid' ARGV[3] 'restaurant' ARGV[4] … 'key_id' ARGV[7].
_FIELDS = ", ".join(f"'{name}', ARGV[{i}]" for i, name in enumerate(FEEDBACK_FIELDS, 3))
_SCRIPT = f"""
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', {_FIELDS})
end
return false
"""


class FeedbackWriter:
    def __init__(self, client: aioredis.Redis, stream: str, maxlen: int, dedup_ttl_s: int) -> None:
        self.client, self.stream, self.maxlen, self.ttl = client, stream, maxlen, dedup_ttl_s
        self.script = client.register_script(_SCRIPT)

    async def write(self, event: FeedbackEvent, key_id: str = NO_KEY_ID) -> str | None:
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
                key_id,
            ],
        )
        if entry is None:
            return None
        return entry.decode() if isinstance(entry, bytes) else str(entry)
