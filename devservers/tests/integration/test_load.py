"""The load generator against a real loopback HTTP/1.1 server: every request is counted, a non-200 is an error,
the open loop keeps its schedule, and the percentiles are numpy's default ones."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from forkcast_devservers.load import closed_loop, open_loop, percentile, summary
from forkcast_devservers.process import cpu_seconds, rss_mib


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if self.path == "/fail" else 200
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _raw(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}".encode()


def test_closed_loop_counts_every_answer_and_each_non_200_as_an_error(port: int) -> None:
    ok = asyncio.run(closed_loop([port], [_raw("/ok")], 2, 0.3))
    assert ok["requests"] > 0 and ok["errors"] == 0 and ok["req_per_s"] > 0
    mixed = asyncio.run(closed_loop([port], [_raw("/ok"), _raw("/fail")], 1, 0.3))
    assert mixed["errors"] == mixed["requests"] // 2, "every second request answered 500"


def test_open_loop_sends_rate_times_seconds_requests_on_schedule(port: int) -> None:
    out = asyncio.run(open_loop([port], [_raw("/ok")], 50.0, 0.4))
    assert out["requests"] == 20 and out["errors"] == 0
    assert out["send_lag_p95_ms"] < 50, "the generator fell behind its own schedule"


def test_percentiles_are_numpys_linear_ones() -> None:
    values = [float(v) for v in np.random.default_rng(3).exponential(size=101)]
    for p in (50, 95, 99):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)), rel=1e-12)
    assert summary([], 1.0, 0)["p50_ms"] != summary([], 1.0, 0)["p50_ms"], "no latencies: NaN, not 0"


def test_cpu_seconds_and_rss_of_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) > before
    assert 1.0 < rss_mib(os.getpid()) < 100_000
