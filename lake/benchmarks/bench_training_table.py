"""Benchmark of the point-in-time training table (CPU per served pair, against reading the same tables) and of
``maintain`` (files merged, the served log's bytes per prediction).

A served log of N predictions (10 served restaurants each, one feedback event per pair, live updates of 1 % of the
users) is written to local Delta tables through the compaction's decoders, then the training table of the whole
window is built (``forkcast_lake.training_table.build``: labels, as-of joins, state ids, split). The floor, measured
in the same run on the same tables, is reading the predictions (exploded to pairs) and the feedback without any
join: the ratio says what the point-in-time logic costs on top of the I/O it cannot avoid. CPU time is the process's
(all polars threads), so µs per pair is comparable across runs even when the shared machine's speed moves.
Request ids are the gateway's shape (45 characters of base64url, incompressible), so the bytes per prediction that
``maintain`` reports after compacting the small files are those of real traffic.

    .venv/bin/python lake/benchmarks/bench_training_table.py --predictions 50000
"""

from __future__ import annotations

import argparse
import base64
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from forkcast_lake.pit_source import ServedLog
from forkcast_lake.pit_testing import LogWriter, write_features_dataset
from forkcast_lake.retention import RetentionSettings, maintain
from forkcast_lake.training_table import build

T0 = 1_800_000_000.0
USERS, RESTAURANTS, SERVED = 10_000, 2_000, 10


def _served_log(base: str, predictions: int, fv: str) -> None:
    rng = random.Random(1)
    log = LogWriter()
    for i in range(predictions):
        ts = T0 + i * 0.05
        ids = rng.sample(range(RESTAURANTS), SERVED)
        rid = base64.urlsafe_b64encode(rng.randbytes(33)).decode()[:45]  # the gateway's <nonce>.<tag> length
        log.prediction(rid, ts, rng.randrange(USERS), {r: rng.random() for r in ids}, fv=fv)
        for r in ids:
            log.feedback(rid, r, rng.random() < 0.3, ts + rng.uniform(0, 900))
        if i % 100 == 0:
            log.user_update(rng.randrange(USERS), [rng.random() for _ in range(30)], ts + 0.01, fv=fv)
    log.commit(base, batches=max(1, predictions // 10_000))


def _measure(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fv = write_features_dataset(Path(tmp) / "features", USERS, RESTAURANTS)
        base = str(Path(tmp) / "lake")
        _served_log(base, args.predictions, fv)
        log = ServedLog(base)
        until = T0 + args.predictions * 0.05 + 1
        pairs = args.predictions * SERVED

        def floor() -> None:
            pl.collect_all([log.predictions(T0, until), log.feedback(T0, until)])

        def table() -> None:
            build(log, T0, until, [str(Path(tmp) / "features")])

        floors = [_measure(floor) for _ in range(args.repeat)]
        tables = [_measure(table) for _ in range(args.repeat)]
        f_wall, f_cpu = min(floors)
        t_wall, t_cpu = min(tables)
        print(f"{args.predictions:,} predictions, {pairs:,} served pairs, {pairs:,} feedback events")
        print(f"read the tables (floor): {f_wall:.2f} s wall, {f_cpu / pairs * 1e6:.2f} µs CPU per pair")
        print(f"training table:          {t_wall:.2f} s wall, {t_cpu / pairs * 1e6:.2f} µs CPU per pair")
        print(f"ratio training table / floor: {t_wall / f_wall:.1f}x wall, {t_cpu / f_cpu:.1f}x CPU")
        # No concurrent writer here, so vacuum may drop the replaced small files at once (0 h: local only).
        settings = RetentionSettings(environment="local", FORKCAST_LAKE_VACUUM_RETENTION_HOURS=0)  # type: ignore[call-arg]
        now = datetime.fromtimestamp(until, UTC)
        wall = time.perf_counter()
        report = maintain(base, settings, now=now)
        wall = time.perf_counter() - wall
        files = ", ".join(f"{t.table} {t.files_before}->{t.files_after}" for t in report.tables)
        print(f"maintain: {wall:.2f} s; files {files}")
        per_prediction, per_pair = report.bytes_per_prediction or 0.0, report.bytes_per_served_pair or 0.0
        stored = sum(t.stored_bytes for t in report.tables)
        print(
            f"served log: {stored:,} bytes, {per_prediction:.0f} per prediction, {per_pair:.1f} per served pair"
        )


if __name__ == "__main__":
    main()
