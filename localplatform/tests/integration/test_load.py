"""The load runner (``make load``) for a few seconds at a low rate: real headless locust runs against a loopback
stand-in for the gateway (the real platform's demo takes ~90 s to start, too long for this test), then the summary
table, the per-stage split and the PNG."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from forkcast_local.load import Stage, main, summarise

KEY = "test-key"


class _Gateway(BaseHTTPRequestHandler):
    """POST /recommend/{user}: 401 without the key, 422 for a body not in the public API's shape, else 200."""

    seen: list[tuple[str, int]] = []  # noqa: RUF012 (shared by the handler threads on purpose)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.headers.get("x-api-key") != KEY:
            code = 401
        elif not self.path.startswith("/recommend/u") or len(body["candidate_restaurant_ids"]) != 1000:
            code = 422
        else:
            code = 200
        _Gateway.seen.append((self.path, code))
        payload = json.dumps({"restaurants": []}).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _platform(tmp: Path, port: int) -> tuple[Path, Path, Path]:
    data = tmp / "data"
    data.mkdir()
    rows = [
        {
            "user_id": u,
            "latitude": 13.7,
            "longitude": 100.5,
            "candidate_restaurant_ids": list(range(u, u + 1000)),
            "size": 20,
            "max_dist": 5000.0,
            "sort_dist": False,
        }
        for u in range(5)
    ]
    pl.DataFrame(rows).write_parquet(data / "requests.parquet")
    (tmp / "platform.toml").write_text(f"[ports]\ngateway = {port}\n[settings]\n")
    root = tmp / "local"
    root.mkdir()
    (root / "api-key").write_text(KEY + "\n")
    return data, tmp / "platform.toml", root


@pytest.mark.slow
def test_runner_sends_the_workload_and_summarises_each_stage(tmp_path: Path, gateway: int) -> None:
    data, config, root = _platform(tmp_path, gateway)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--config", str(config), "--root", str(root), "--out", str(out)]
    argv += ["--rate", "20", "--duration", "3", "--users", "2", "--steps", "1,2", "--step-seconds", "2"]
    assert main(argv) == 0
    summary = (out / "summary.md").read_text()
    table = [
        line for line in summary.splitlines() if line.startswith("| acceptance") or line.startswith("| step")
    ]
    assert [line.split("|")[1:3] for line in table] == [
        [" acceptance ", " 2 "],
        [" step ", " 1 "],
        [" step ", " 2 "],
    ]
    assert all(line.split("|")[5].strip() == "0" for line in table)  # zero failures in every stage
    assert all(int(line.split("|")[4]) > 0 for line in table)
    # Poisson arrivals at 20 req/s for 3 s: 60 expected (σ ≈ 7.7), whatever the users' latency.
    assert 35 <= int(table[0].split("|")[4]) <= 85, table[0]
    assert "PASS" in summary and "saturation:" in summary
    assert "acceptance statuses: {200: " in summary and "step statuses: {200: " in summary
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _Gateway.seen and {code for _, code in _Gateway.seen} == {200}
    assert {path for path, _ in _Gateway.seen} <= {f"/recommend/u{u:05d}" for u in range(5)}


def test_summarise_splits_stages_by_start_time_and_counts_non_200_as_failures(tmp_path: Path) -> None:
    log = tmp_path / "requests.csv"
    log.write_text(
        "start,latency_ms,status,users\n"
        "100.0,2.0,200,1\n100.5,4.0,200,1\n"  # stage 1: [0, 1) s
        "101.2,10.0,200,2\n101.5,20.0,503,2\n101.9,30.0,0,2\n"  # stage 2: [1, 2) s
    )
    first, second = summarise("step", log, [Stage(1, 1.0), Stage(2, 1.0)])
    assert (first.requests, first.failures, first.p50_ms, first.max_ms) == (2, 0, 4.0, 4.0)
    assert (second.requests, second.failures, second.p95_ms, second.rps) == (3, 2, 10.0, 3.0)
