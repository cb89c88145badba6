"""`bench_serve.py` (outside the package) runs the service and its floor on tiny data and prints the floor ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_serve.py"


def test_floor_runs_the_same_redis_round_trip_and_the_ratio_is_printed(
    tiny_data: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    args = ["--data", str(tiny_data), "--model-dir", str(model_dir), "--workers", "1", "--open-seconds", "0"]
    args += ["--closed-seconds", "1", "--concurrency", "4", "--floor-concurrency", "4", "--skip-baseline"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--requests", "200", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "floor ratio" in done.stdout and "µs server CPU/req" in done.stdout
    result = json.loads(out.read_text())
    floor = result["floor"]["closed_loop"][0]
    # Every floor request was answered 200 (a known request and its MGET) and Redis did work for them.
    assert floor["errors"] == 0 and floor["requests"] > 0 and floor["redis_cpu_us_per_req"] > 0
    ratio = result["floor_ratio"]
    assert ratio["concurrency"] == 4
    assert ratio["ratio"] == ratio["service_req_per_s"] / ratio["floor_req_per_s"]
    # The contract floor answered every request and logged exactly one prediction event per request, warm-up
    # included, flushed to the events stream by its shutdown at the latest.
    contract = result["contract_floor"]
    level = contract["closed_loop"][0]
    assert level["errors"] == 0 and level["requests"] > 0
    assert contract["events_xadded"] == contract["warmup_requests"] + level["requests"]
    assert ratio["contract_floor_ratio"] == ratio["contract_floor_req_per_s"] / ratio["floor_req_per_s"]
    assert "contract floor (floor + decode + event)" in done.stdout
