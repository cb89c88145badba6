"""Reading a dataset from the lake vs from a local directory: wall time, CPU and peak RSS of the real consumers.

Starts weed mini and redis-server (forkcast_devservers), publishes ``--data`` (default data/small) to
``s3://bench/<preset>``, then runs ``forkcast-retrain prep`` and ``forkcast-features load`` once on the local
directory and once on the ``s3://`` URI (a cold cache: the snapshot is downloaded and verified), each as its own
process, and prints each one's peak RSS (``wait4``'s ru_maxrss: the largest of the process and its children, so
the fetch child counts) with the ratio s3/local measured in this run, and CPU µs per dataset row.
Run: ``.venv/bin/python lake/benchmarks/bench_snapshot_read.py [--data DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkcast_contract.dataset import read_manifest
from forkcast_devservers.servers import RedisServer, Seaweed

BIN = Path(sys.executable).parent


def _measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS MiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
        )
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/small"), help="a generated dataset directory")
    args = parser.parse_args()
    manifest = read_manifest(args.data)
    rows = sum(f.rows for f in manifest.files)
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp_name:
        tmp = Path(tmp_name)
        with Seaweed(tmp / "s3") as seaweed, RedisServer(tmp / "redis") as redis_server:
            env = {
                **os.environ,
                **seaweed.client_env("bench"),
                "FORKCAST_ENVIRONMENT": "local",
                "FORKCAST_DATASET_CACHE": str(tmp / "cache"),
                "REDIS_URL": redis_server.url,
                "OPENBLAS_NUM_THREADS": "1",
            }
            uri = f"s3://bench/{manifest.preset}"
            wall, cpu, rss = _measure(
                [str(BIN / "forkcast-data"), "publish", str(args.data), "--to", uri], env
            )
            print(f"publish {manifest.preset} ({rows:,} rows): {wall:.1f} s, {cpu * 1e6 / rows:.2f} CPU µs/row, "
                  f"peak RSS {rss} MiB")  # fmt: skip
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            wall, cpu, rss = _measure([sys.executable, "-m", "forkcast_lake.datasets_fetch", uri], env)
            print(f"fetch alone (cold): {wall:.1f} s, {cpu * 1e6 / rows:.2f} CPU µs/row, peak RSS {rss} MiB "
                  "(the child a consumer runs; its own peak, independent of the dataset size)")  # fmt: skip
            for name, command in (
                ("retrain prep", ["forkcast-retrain", "prep", "--out", "{run}"]),
                ("features load", ["forkcast-features", "load", "--no-progress"]),
            ):
                results = {}
                for where, data in (("local", str(args.data)), ("s3", uri)):
                    shutil.rmtree(
                        tmp / "cache", ignore_errors=True
                    )  # s3: a cold read, downloaded and verified
                    run = tmp / f"run-{where}-{name.split()[0]}"
                    argv = [str(BIN / command[0]), *(a.replace("{run}", str(run)) for a in command[1:])]
                    env["FORKCAST_FEATURE_PREFIX"] = f"bench-{where}"
                    results[where] = _measure([*argv, "--data", data], env)
                    wall, cpu, rss = results[where]
                    print(f"{name:14s} {where:5s}: {wall:6.1f} s wall, {cpu * 1e6 / rows:6.2f} CPU µs/row, "
                          f"peak RSS {rss:5d} MiB")  # fmt: skip
                (lw, lc, lr), (sw, sc, sr) = results["local"], results["s3"]
                print(
                    f"{name:14s} s3/local: wall {sw / lw:.2f}x, CPU {sc / lc:.2f}x, peak RSS {sr / lr:.2f}x"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
