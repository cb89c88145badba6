"""Per-key token bucket kept in Redis, so the limit holds across gateway replicas (one Lua script, atomic).

The script reads the bucket (tokens, last refill in ms), refills at ``rate`` tokens/s up to ``burst``, takes one
token if there is one, writes back and sets an expiry; it uses Redis's own clock (TIME) so replicas with skewed
clocks agree. If Redis fails, the request is let through and counted: a rate-limit outage should not become a
recommendation outage.

Leases: each replica takes up to ``lease`` tokens per round trip (``burst // 20``, at least 1) and spends them
locally for at most ``lease_s``. Why: the Redis round trip was the largest single cost of the gateway in a cProfile
of bench_gateway's load (the socket write alone ≈ 140 µs of a ≈ 770 µs request on the 2-core VM); with leases it
happens once per ``lease`` requests. The global limit still holds: a replica can hold at most ``lease`` unspent
tokens, and with a small burst (``lease`` = 1) every request goes to Redis exactly as before.

Two rules keep leases from charging a key for tokens it never used (the load test's 30 req/s from 10 locust users
in lock step got 27 % 429s against a 2,000/s limit before them): the tokens left in an expired lease go back to the
bucket with the next round trip (``refund``), and concurrent requests that find no lease wait for one round trip
per key instead of each taking a lease of their own (one ``asyncio.Lock`` per key id). So that the lock cannot
queue requests behind a hung Redis's timeout, a failed round trip lets the key's requests pass without asking for
``lease_s``.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local refund = tonumber(ARGV[4] or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000 + refund)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  allowed = math.min(want, math.floor(tokens))
  tokens = tokens - allowed
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""

KEY_PREFIX = "fc:gateway:ratelimit:"
# /feedback's buckets, apart from /recommend's: its own, lower limit per key (issue 18.2).
FEEDBACK_KEY_PREFIX = "fc:gateway:ratelimit:feedback:"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    error: bool = False


# One shared instance: building a frozen dataclass per request cost 0.65-1.13 µs (timeit, 2-core VM, 2026-12-05).
_ADMITTED = Decision(True, 0)


class RateLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        rate_per_s: float,
        burst: int,
        lease_s: float = 0.25,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.client, self.rate, self.burst, self.lease_s = client, rate_per_s, burst, lease_s
        self.prefix = prefix
        self.lease = max(1, burst // 20)
        self.script = client.register_script(_SCRIPT)
        # key id → (tokens leased and not yet spent, monotonic time after which they are dropped)
        self.leased: dict[str, tuple[int, float]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        # key id → monotonic time until which requests pass without asking Redis, after a failed round trip.
        self.failing_open_until: dict[str, float] = {}

    async def warm(self) -> bool:
        """Open a pooled connection and load the script at startup; False if Redis is down (requests still pass).

        Why: the first Redis connection's handshake took 70-150 ms in the gateway (py-spy of the first request to a
        fresh gateway, BENCHMARKS.md), and the first request paid it — a dead upstream's 503 came in 134 ms, past
        the 100 ms target, then in ≤ 7 ms.
        """
        try:
            await self.client.script_load(_SCRIPT)
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    def _spend(self, key_id: str) -> bool:
        """Take one token of this replica's live lease, if it has one."""
        left, until = self.leased.get(key_id, (0, 0.0))
        if left > 0 and time.monotonic() < until:
            self.leased[key_id] = (left - 1, until)
            return True
        return False

    def spend(self, key_id: str) -> Decision | None:
        """The admission when a token of this replica's live lease is left (no await: the Edge's usual path);
        None when :meth:`take` must decide."""
        return _ADMITTED if self._spend(key_id) else None

    def _failing_open(self, key_id: str) -> bool:
        return time.monotonic() < self.failing_open_until.get(key_id, 0.0)

    async def take(self, key_id: str) -> Decision:
        if self._spend(key_id):
            return _ADMITTED
        if self._failing_open(key_id):
            return Decision(True, 0, error=True)
        # The key ids are the configured API keys (and "anonymous"): a bounded set, so is this dict.
        lock = self.locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            if self._spend(key_id):  # another request renewed the lease while this one waited
                return _ADMITTED
            if self._failing_open(key_id):  # ... or found Redis down: do not queue behind its timeout
                return Decision(True, 0, error=True)
            left, until = self.leased.pop(key_id, (0, 0.0))
            try:
                allowed, wait_ms = await self.script(
                    keys=[self.prefix + key_id], args=[self.rate, self.burst, self.lease, left]
                )
            except (RedisError, OSError, TimeoutError):
                if left:  # the refund goes with the next round trip that works
                    self.leased[key_id] = (left, until)
                # One request per lease period probes a failing Redis; the others pass at once (fail open).
                self.failing_open_until[key_id] = time.monotonic() + self.lease_s
                return Decision(True, 0, error=True)
            if allowed:
                self.leased[key_id] = (int(allowed) - 1, time.monotonic() + self.lease_s)
                return _ADMITTED
        # Retry-After is whole seconds (RFC 9110); round up so a client that obeys it finds a token.
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))
