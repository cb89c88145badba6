"""The benchmarks (featurestore/benchmarks/, outside the package) run end to end on tiny data, and their built-in
cross-checks hold (all fetch designs and all distance filters return the same candidates)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_features.py"


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_fetch_designs_agree_and_report(tiny_data: Path) -> None:
    out = _run("fetch", "--data", str(tiny_data), "--requests", "100")
    assert "coordinates in memory + revision" in out and "H3 grid disk" in out
    assert out.count("Redis-bound cap") == 4 and out.count("µs/request") == 3


def test_load_bench_reports_rate_and_bytes_per_user(tiny_data: Path) -> None:
    out = _run("load", "--data", str(tiny_data), "--baseline-rows", "2000", "--no-progress")
    assert "rows/s, ratio" in out and "B/user" in out


@pytest.mark.slow
def test_cluster_bench_compares_standalone_and_four_cluster_layouts_on_the_same_bytes(
    tiny_data: Path,
) -> None:
    # The bench asserts that every layout returned the same bytes as the standalone reader; here its table.
    out = _run("cluster", "--data", str(tiny_data), "--requests", "200")
    rows = [
        line.strip() for line in out.splitlines() if line.startswith(("  standalone redis", "  Cluster:"))
    ]
    assert rows[0].startswith("standalone redis-server"), rows
    assert len(rows) == 7 and "a restaurant copy per master (chosen)" in rows[1], rows
    # The chosen layout's key share per master: three shares, each at least 25 %.
    tokens = rows[1].split()
    shares = tokens[tokens.index("|") - 5 : tokens.index("|")]
    assert shares[1] == shares[3] == "/" and all(int(x.rstrip("%")) >= 25 for x in shares[::2]), shares
