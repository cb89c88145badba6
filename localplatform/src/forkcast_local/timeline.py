"""A drill's timeline and its waits: every stage with its wall-clock time, and a bounded wait that names what it
waited for when it gives up (so a failed drill says how far it got and what did not happen)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class DrillError(RuntimeError):
    """A stage did not happen in its time limit, or a component failed (the message says which)."""


@dataclass
class Timeline:
    """Every stage with its wall-clock time and elapsed seconds; one progress line each."""

    t0: float = field(default_factory=time.time)
    stages: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, name: str, at: float | None = None, **detail: Any) -> float:
        at = at or time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
        self.stages.append(
            {"stage": name, "at": stamp, "unix": at, "elapsed_s": round(at - self.t0, 2), **detail}
        )
        extra = " ".join(f"{k}={v}" for k, v in detail.items())
        print(f"[{stamp[11:19]} +{at - self.t0:6.1f}s] ✔ {name} {extra}".rstrip(), flush=True)
        return at


def wait(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """The first truthy value of ``check()``, polled every ``every_s``; DrillError naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")
