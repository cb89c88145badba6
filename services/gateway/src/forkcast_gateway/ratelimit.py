"""Per-key token bucket kept in Redis, so the limit holds across gateway replicas (one Lua script, atomic).

The script reads the bucket (tokens, last refill in ms), refills at ``rate`` tokens/s up to ``burst``, takes one
token if there is one, writes back and sets an expiry; it uses Redis's own clock (TIME) so replicas with skewed
clocks agree. One EVALSHA round trip per request. If Redis fails, the request is let through and counted:
a rate-limit outage should not become a recommendation outage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""

KEY_PREFIX = "fc:gateway:ratelimit:"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    error: bool = False


class RateLimiter:
    def __init__(self, client: aioredis.Redis, rate_per_s: float, burst: int) -> None:
        self.client, self.rate, self.burst = client, rate_per_s, burst
        self.script = client.register_script(_SCRIPT)

    async def take(self, key_id: str) -> Decision:
        try:
            allowed, wait_ms = await self.script(keys=[KEY_PREFIX + key_id], args=[self.rate, self.burst])
        except (RedisError, OSError, TimeoutError):
            return Decision(True, 0, error=True)
        if allowed:
            return Decision(True, 0)
        # Retry-After is whole seconds (RFC 9110); round up so a client that obeys it finds a token.
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))
