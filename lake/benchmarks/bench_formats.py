"""Delta Lake (deltalake) vs Apache Iceberg (pyiceberg, SqlCatalog on sqlite + S3 FileIO) on SeaweedFS (weed mini).

The lake's choice of format (issue 16.1) rests on this measurement and on what each needs to run: Delta keeps its
log in S3 beside the data (nothing else to run), Iceberg needs a catalog (here sqlite on one machine; in a cluster a
REST catalog or a database every writer reaches). The workload is the lake's: ``--commits`` appends of
``--rows`` served-log-like rows each (the compaction job's commits), then a full read of the table, then a read of
the version after the first commit (time travel). Prints per format wall time per commit, CPU µs per row written
and read, and the ratio Delta/Iceberg measured in this run.
Run: ``.venv/bin/python lake/benchmarks/bench_formats.py [--commits 30 --rows 20000]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from pyiceberg.catalog.sql import SqlCatalog

from forkcast_devservers.servers import Seaweed
from forkcast_lake.settings import LakeSettings
from forkcast_lake.storage import storage_options


def _batch(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "rid": pa.array([f"r{seed:04d}{i:08d}" for i in range(rows)]),
            "ts": pa.array(rng.random(rows) * 1e9),
            "user_id": pa.array(rng.integers(0, 100_000, rows)),
            "restaurant_id": pa.array(rng.integers(0, 20_000, rows)),
            "score": pa.array(rng.random(rows)),
        }
    )


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _delta(uri: str, options: dict[str, str], batches: list[pa.Table]) -> dict[str, float]:
    wall_w, cpu_w = 0.0, 0.0
    for batch in batches:
        w, c, _ = _timed(partial(write_deltalake, uri, batch, mode="append", storage_options=options))
        wall_w, cpu_w = wall_w + w, cpu_w + c
    wall_r, cpu_r, table = _timed(lambda: DeltaTable(uri, storage_options=options).to_pyarrow_table())
    wall_t, _, old = _timed(lambda: DeltaTable(uri, version=0, storage_options=options).to_pyarrow_table())
    assert table.num_rows == sum(b.num_rows for b in batches) and old.num_rows == batches[0].num_rows  # type: ignore[attr-defined]
    return {
        "commit_s": wall_w / len(batches),
        "write_cpu": cpu_w,
        "read_s": wall_r,
        "read_cpu": cpu_r,
        "tt_s": wall_t,
    }


def _iceberg(catalog: SqlCatalog, batches: list[pa.Table]) -> dict[str, float]:
    catalog.create_namespace("bench")
    table = catalog.create_table("bench.served", schema=batches[0].schema)
    wall_w, cpu_w = 0.0, 0.0
    for batch in batches:
        w, c, _ = _timed(partial(table.append, batch))
        wall_w, cpu_w = wall_w + w, cpu_w + c
    first = table.history()[0].snapshot_id
    wall_r, cpu_r, out = _timed(lambda: catalog.load_table("bench.served").scan().to_arrow())
    wall_t, _, old = _timed(lambda: catalog.load_table("bench.served").scan(snapshot_id=first).to_arrow())
    assert out.num_rows == sum(b.num_rows for b in batches) and old.num_rows == batches[0].num_rows  # type: ignore[attr-defined]
    return {
        "commit_s": wall_w / len(batches),
        "write_cpu": cpu_w,
        "read_s": wall_r,
        "read_cpu": cpu_r,
        "tt_s": wall_t,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=30, help="appends per format")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per append")
    args = parser.parse_args()
    batches = [_batch(args.rows, i) for i in range(args.commits)]
    total = args.commits * args.rows
    with (
        tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp_name,
        Seaweed(Path(tmp_name) / "s3") as s3,
    ):
        s3.create_bucket("formats")
        env = s3.client_env("formats")
        settings = LakeSettings.model_validate({**env, "FORKCAST_ENVIRONMENT": "local"})
        delta = _delta("s3://formats/delta/served", storage_options(settings), batches)
        catalog = SqlCatalog(
            "bench",
            uri=f"sqlite:///{tmp_name}/catalog.db",
            warehouse="s3://formats/iceberg",
            **{
                "s3.endpoint": env["S3_ENDPOINT_URL"],
                "s3.access-key-id": env["AWS_ACCESS_KEY_ID"],
                "s3.secret-access-key": env["AWS_SECRET_ACCESS_KEY"],
                "s3.region": env["AWS_REGION"],
            },
        )
        iceberg = _iceberg(catalog, batches)
    print(f"{args.commits} appends x {args.rows:,} rows on weed mini (pid {os.getpid()})")
    for name, r in (("delta", delta), ("iceberg", iceberg)):
        print(
            f"{name:8s} commit {r['commit_s'] * 1e3:7.1f} ms  write {r['write_cpu'] * 1e6 / total:5.2f} CPU µs/row  "
            f"read all {r['read_s'] * 1e3:7.1f} ms ({r['read_cpu'] * 1e6 / total:5.2f} CPU µs/row)  "
            f"time travel {r['tt_s'] * 1e3:6.1f} ms"
        )
    ratio = {key: delta[key] / iceberg[key] for key in delta}
    print(
        f"delta/iceberg: commit {ratio['commit_s']:.2f}x, write CPU {ratio['write_cpu']:.2f}x, "
        f"read {ratio['read_s']:.2f}x, time travel {ratio['tt_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
