"""A circuit breaker per upstream endpoint: after N consecutive failures stop sending for a while, then probe.

Closed: requests flow, consecutive failures are counted. Open (for ``open_s``): the endpoint is skipped, so a dead
upstream costs nothing but a 503 in microseconds instead of a connect timeout per request. Half-open: one probe
request is let through; its success closes the circuit, its failure opens it again for another ``open_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.open_s, self.clock = failures, open_s, clock
        self.failures = 0
        self.opened_at = 0.0
        self.state = State.CLOSED
        self.probing = False

    def allow(self) -> bool:
        """May a request go to this endpoint now? In half-open, only one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() - self.opened_at < self.open_s:
                return False
            self.state = State.HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        self.state = State.CLOSED

    def failure(self) -> None:
        self.probing = False
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.threshold:
            self.state = State.OPEN
            self.opened_at = self.clock()
