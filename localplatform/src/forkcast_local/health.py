"""Health probes of the components: a Redis PING or an HTTP GET that must answer 200, each within one second."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import redis


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def redis_ok(port: int, timeout_s: float = 1.0) -> bool:
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout_s)
        return bool(client.ping())
    except redis.RedisError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll ``check`` until it passes (True), the process dies or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(0.2)
    return check()
