"""The generator benchmark (datagen/benchmarks/, outside the package) runs end to end on the tiny preset and
reports both click-draw rates, their ratio and the generate figures; both draws get the same rounds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_generate.py"


def test_bench_compares_the_vectorised_draw_with_the_per_row_loop(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--preset",
            "tiny",
            "--loop-rows",
            "2000",
            "--rounds",
            "2",
            "--out",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the same rounds for both sides (the loop had one run against the vectorised draw's best of 5 before)
    assert "click draw, best of 2 rounds each" in done.stdout, done.stdout
    loop = re.search(r"original per-row loop : +([\d,]+) rows/s +\(2,000 rows per round\)", done.stdout)
    vec = re.search(r"vectorised \(in memory\): +([\d,]+) rows/s +ratio ([\d,]+)x", done.stdout)
    assert loop and vec, done.stdout
    assert int(vec.group(1).replace(",", "")) > int(loop.group(1).replace(",", "")) > 0
    assert "tiny preset generate (250,000 click rows, written + hashed)" in done.stdout
    assert (tmp_path / "d" / "dataset.json").is_file()


def test_both_draws_run_the_same_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls: dict[str, list[int]] = {"loop": [], "vectorised": []}
    monkeypatch.setattr(bench, "original_loop", lambda _e, _rows, i: calls["loop"].append(i))
    monkeypatch.setattr(bench, "vectorised", lambda _e, _rows, i: calls["vectorised"].append(i))
    monkeypatch.setattr(bench, "generate", lambda _request: None)  # the dataset write is not what is checked
    bench.main(["--preset", "tiny", "--rounds", "3", "--out", str(tmp_path / "d")])
    # before: the loop ran once against the vectorised draw's best of 5
    assert calls == {"loop": [0, 1, 2], "vectorised": [0, 1, 2]}
