"""The HTTP side every monitoring job shares: GET /metrics, /healthz (liveness) and /readyz (readiness).

Kubernetes probes the same named port Prometheus scrapes. /healthz answers 200 while the process serves HTTP (the
jobs wait out Redis outages in their loop, so a dependency outage is no reason to restart them); /readyz runs the
job's own check (Redis answers PING for the Redis jobs) and answers 503 with the reason when it fails, so a job
that cannot work shows as not ready instead of exporting stale numbers unnoticed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("forkcast_monitoring.probes")

# A readiness check: None when ready, else why not (shown in the 503 body and the log).
ReadyCheck = Callable[[], str | None]


def always_ready() -> str | None:
    return None


def redis_ready(url: str, timeout_s: float = 1.0) -> ReadyCheck:
    """A check that PINGs the Redis at ``url`` on its own short-timeout connection (a probe never hangs)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def check() -> str | None:
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"redis unreachable: {exc}"
        return None

    return check


def all_ready(*checks: ReadyCheck) -> ReadyCheck:
    """Ready when every check is (a job reading two Redis servers); otherwise the first failure's reason."""

    def check() -> str | None:
        return next((reason for c in checks if (reason := c()) is not None), None)

    return check


class ProbeHandler(BaseHTTPRequestHandler):
    """GET routes of a job; a server subclasses it with ``registry`` and ``ready`` set (see ``handler_class``)."""

    registry: CollectorRegistry
    ready: ReadyCheck = staticmethod(always_ready)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self.reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self.reply(200, b"ok\n")
        elif path == "/readyz":
            reason = type(self).ready()
            if reason is None:
                self.reply(200, b"ready\n")
            else:
                log.warning("not ready: %s", reason)
                self.reply(503, f"not ready: {reason}\n".encode())
        else:
            self.reply(404, b"not found\n")

    def reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def handler_class(
    registry: CollectorRegistry, ready: ReadyCheck, base: type[ProbeHandler] = ProbeHandler
) -> type[ProbeHandler]:
    """``base`` bound to one registry and readiness check (a class per server: the stdlib server wants a class)."""
    return type("BoundHandler", (base,), {"registry": registry, "ready": staticmethod(ready)})


def start_probe_server(
    host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck = always_ready
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread; ``shutdown()`` stops it."""
    server = ThreadingHTTPServer((host, port), handler_class(registry, ready))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"probes-{port}", daemon=True).start()
    return server
