"""``python pipelines/retrain/benchmarks/bench_distributed.py``: data-parallel scaling of training, 1 vs 2 processes.

What the Argo Workflow does on N pods (torchrun, one process per pod, gloo all-reduce of one flat gradient buffer per
step; forkcast_retrain.distributed), measured here on one machine with the same threads in total: one process
with T torch threads against ``torchrun --standalone --nproc-per-node 2`` with T/2 threads each, the same global
batch (each rank takes half), the same rows. Runs alternate (1, 2, 1, 2, …) so that the shared machine's drift
hits both alike; the ratio of the best epoch rows/s of each is the scaling, and the CPU µs per row (all processes
of the run: user + system time of the children, startup included) says what the second process costs.

Lives beside the package, not in it: training never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from forkcast_contract.model_format import TRAIN_LOG_FILE
from forkcast_retrain.prep import PREP_DIR, run_prep
from forkcast_retrain.recipes import RECIPES


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _train(
    prepared: Path, run: Path, processes: int, threads: int, epochs: int, batch: int
) -> dict[str, Any]:
    """One training run in child processes on a fresh copy of the prepared run; its epoch figures and CPU time."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(prepared / PREP_DIR, run / PREP_DIR)
    call = ["train", "--out", str(run), "--epochs", str(epochs), "--no-progress"]
    call += ["--threads", str(threads), "--batch-size", str(batch // processes)]
    if processes == 1:
        cmd = [sys.executable, "-m", "forkcast_retrain.cli", *call]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
        ]
        cmd += ["-m", "forkcast_retrain.cli", *call]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1"}
    cpu0, wall0 = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    cpu, wall = _children_cpu_s() - cpu0, time.perf_counter() - wall0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    log = [json.loads(line) for line in (run / TRAIN_LOG_FILE).read_text().splitlines()]
    rows = sum(e["rows"] for e in log)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "rows": rows,
        "epoch_rows_per_s": max(e["rows_per_s"] for e in log),
        "epoch_s": min(e["time_s"] for e in log),
        "step_s": min(e["step_s"] for e in log),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_row": round(cpu / rows * 1e6, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/small"), help="dataset directory (default data/small)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench-distributed"), help="scratch run directories"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads in total, split over the processes"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of (1 process, 2 processes)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads % 2:
        parser.error("--threads must be even: the 2-process run gives each process half")
    batch = RECIPES["default"].batch_size
    prepared = args.out / "prepared"
    started = time.perf_counter()
    run_prep(args.data, prepared)
    print(f"prep of {args.data}: {time.perf_counter() - started:.1f} s", flush=True)
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for r in range(args.rounds):
        for processes in (1, 2):
            res = _train(
                prepared, args.out / f"p{processes}", processes, args.threads // processes, args.epochs, batch
            )
            results[processes].append(res)
            print(
                f"round {r + 1}: {processes} process(es) x {res['threads_per_process']} thread(s): "
                f"{res['epoch_rows_per_s']:,} rows/s per epoch ({res['epoch_s']} s, steps {res['step_s']} s), "
                f"{res['cpu_us_per_row']} CPU µs/row, wall {res['wall_s']} s",
                flush=True,
            )
    best = {p: max(runs, key=lambda x: x["epoch_rows_per_s"]) for p, runs in results.items()}
    ratio = best[2]["epoch_rows_per_s"] / best[1]["epoch_rows_per_s"]
    cpu_ratio = min(x["cpu_us_per_row"] for x in results[2]) / min(x["cpu_us_per_row"] for x in results[1])
    print(
        f"2-process / 1-process rows/s (best epoch of {args.rounds} each, {args.threads} threads in total): "
        f"{ratio:.2f}x; CPU per row 2/1: {cpu_ratio:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "data": str(args.data),
                    "batch_global": batch,
                    "runs": results,
                    "ratio_rows_per_s": round(ratio, 3),
                    "ratio_cpu_per_row": round(cpu_ratio, 3),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
