"""The probes: HTTP 2xx only, TCP accept, Redis PING over RESP with AUTH."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from forkcast_devservers.ready import http_ok, tcp_ok


@pytest.fixture
def http() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(int(self.path.strip("/")))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_ok_is_true_for_2xx_only(http: str) -> None:
    assert http_ok(f"{http}/200")
    assert http_ok(f"{http}/204")
    assert not http_ok(f"{http}/503")
    assert not http_ok(f"{http}/404")


def test_nothing_listening_is_not_ok(free_port: int) -> None:
    assert not http_ok(f"http://127.0.0.1:{free_port}/")
    assert not tcp_ok("127.0.0.1", free_port)


def test_tcp_ok_sees_a_listener(http: str) -> None:
    assert tcp_ok("127.0.0.1", int(http.rsplit(":", 1)[1]))
