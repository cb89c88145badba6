"""The benchmarks run end to end on tiny data, and their built-in cross-checks hold (all fetch designs and all
distance filters return the same candidates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forkcast_features.bench import main

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


def test_fetch_designs_agree_and_report(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "--data", str(tiny_data), "--requests", "100"]) == 0
    out = capsys.readouterr().out
    assert "coordinates in memory + revision" in out and "H3 grid disk" in out
    assert out.count("Redis-bound cap") == 4 and out.count("µs/request") == 3


def test_load_bench_reports_rate_and_bytes_per_user(
    tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "--data", str(tiny_data), "--baseline-rows", "2000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rows/s, ratio" in out and "B/user" in out
