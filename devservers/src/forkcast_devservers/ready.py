"""Waiting until a server answers, once for every caller; and the probes that say it does.

``wait_until`` fails fast with the log tail when the process it waits for has died, rather than waiting out the
timeout on a server that will never come up (a port taken, a bad flag).
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from forkcast_devservers import resp
from forkcast_devservers.process import Proc, tail


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str, proc: Proc | None = None) -> None:
    """Poll ``check`` until it returns True.

    Raises ``RuntimeError`` with the last lines of ``proc``'s log as soon as ``proc`` is no longer alive, and
    ``TimeoutError`` naming ``what`` after ``timeout_s``. An ``OSError`` from ``check`` counts as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.02
    while True:
        if proc is not None and not proc.alive():
            log = f" (log {proc.log}):\n{tail(proc.log, 30)}" if proc.log is not None else ""
            raise RuntimeError(f"{what} exited before it was ready{log}")
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            where = f"; see {proc.log}" if proc is not None and proc.log is not None else ""
            raise TimeoutError(f"{what} not ready within {timeout_s:g} s{where}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.25)


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    """True when a GET of ``url`` answers 2xx (redirects followed); False on any other status or no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_ok(host: str, port: int) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def redis_ping(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 1.0,
) -> bool:
    """True when Redis at ``host:port`` answers PING with PONG (after AUTH when a password is given)."""
    try:
        return (
            resp.command(host, port, "PING", username=username, password=password, timeout_s=timeout_s)
            == "PONG"
        )
    except (OSError, resp.RespError):
        return False
