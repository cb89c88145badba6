"""``python pipelines/retrain/benchmarks/bench_train.py``: the training benchmark behind ``make bench-train``.

In one run, on the same data and the same threads: rows/s of the fast path and of the plain autograd loop
(train steps including Adam, on one gathered click file); then epochs of the default recipe with step-only
segments interleaved (``epoch_ratio.py``: the epoch's time over the step-only time of its rows, issue 19's
"an epoch at the compute bound is <= 1.2x", with its spread); then full ``forkcast-retrain all`` runs of both
recipes in child processes (per-epoch time and its own train steps, peak RSS of the whole process, test
accuracy / ROC-AUC). The machine is shared, so every comparison is a ratio measured in the same run, never an
absolute figure against another day.
Lives beside the package, not in it: training never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from epoch_ratio import interleaved_epochs  # beside this script (its folder is on sys.path when run)

from forkcast_contract.model_format import METRICS_FILE, TRAIN_LOG_FILE
from forkcast_retrain.fastpath import autograd_loss_and_grads, fast_loss_and_grads
from forkcast_retrain.model import RankNet, build_model, build_optimizer
from forkcast_retrain.prep import load_prepared, run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.stream import FeatureGatherer

StepFn = Callable[[RankNet, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _rows_per_s(step: StepFn, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model = build_model(0)
    opt = build_optimizer(model, 1e-3)
    for start in range(0, 4 * batch_size, batch_size):  # warm-up (allocator, kernels)
        step(model, x[start : start + batch_size], y[start : start + batch_size])
        opt.step()
    started = time.perf_counter()
    for start in range(0, len(y), batch_size):
        loss, _ = step(model, x[start : start + batch_size], y[start : start + batch_size])
        float(loss)
        opt.step()
    return len(y) / (time.perf_counter() - started)


def step_throughput(run: Path, batch_size: int, threads: int, max_rows: int, rounds: int) -> dict[str, float]:
    """Rows/s of train steps (loss, gradients, Adam) for both code paths on the same gathered rows.

    The VM is shared and its speed swings several-fold within seconds (other tenants), so the two paths are
    measured in alternating rounds and each is reported as its median round; the ratio is of the medians.
    """
    torch.set_num_threads(threads)
    prepared = load_prepared(run)
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    x, y = gatherer.load(prepared.click_files("train")[0], np.random.default_rng(0))
    x, y = x[:max_rows], y[:max_rows]
    samples: dict[str, list[float]] = {"fast": [], "autograd": []}
    for _ in range(rounds):
        samples["fast"].append(_rows_per_s(fast_loss_and_grads, x, y, batch_size))
        samples["autograd"].append(_rows_per_s(autograd_loss_and_grads, x, y, batch_size))
    out = {name: float(np.median(v)) for name, v in samples.items()}
    out["ratio"] = out["fast"] / out["autograd"]
    out["ratio_best_rounds"] = max(samples["fast"]) / max(samples["autograd"])
    return out


def full_run(data: Path, run: Path, recipe: str, extra: list[str]) -> dict[str, Any]:
    """``forkcast-retrain all`` in a child process; its own peak RSS comes from getrusage of that child."""
    cmd = [sys.executable, "-m", "forkcast_retrain.cli", "all", "--data", str(data), "--out", str(run)]
    cmd += ["--recipe", recipe, "--restart", "--no-progress", *extra]
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {child.returncode}")
    metrics = json.loads((run / METRICS_FILE).read_text())
    log = [json.loads(line) for line in (run / TRAIN_LOG_FILE).read_text().splitlines()]
    return {
        "recipe": recipe,
        "epoch_time_s": [e["time_s"] for e in log],
        "epoch_step_s": [e["step_s"] for e in log],
        "rows_per_epoch": log[0]["rows"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "test_accuracy": metrics["accuracy"],
        "test_roc_auc": metrics["roc_auc"],
        "test_logloss": metrics["logloss"],
    }


def own_step_ratios(full: dict[str, Any]) -> list[float]:
    """Each epoch's time over the time it spent in its own train steps (``step_s`` of train_log.jsonl).

    Not the step-only bound (those steps ran beside the reader thread), but taken at the same moments as the
    epoch. The step-only bound is ``epoch_ratio.interleaved_epochs``; dividing by a step rate measured minutes
    earlier, as this benchmark once did, swung 0.41-2.31x with the load on the shared VM.
    """
    return [round(t / s, 3) for t, s in zip(full["epoch_time_s"], full["epoch_step_s"], strict=True)]


def _ratios(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}x" for v in values) + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python pipelines/retrain/benchmarks/bench_train.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/full"), help="dataset directory (default data/full)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench"), help="folder for the benchmark's runs"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads for every measurement (default 2)"
    )
    parser.add_argument(
        "--step-rows", type=int, default=262_144, help="rows per code path in the step comparison"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds per code path (median reported)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each full run (default 5)")
    parser.add_argument(
        "--ratio-epochs",
        type=int,
        default=1,
        help="epochs of the default recipe with interleaved step-only segments (default 1; 0 skips them)",
    )
    parser.add_argument(
        "--skip-full",
        action="store_true",
        help="no `forkcast-retrain all` runs: only the step comparison and the interleaved epoch ratio",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=sorted(RECIPES),
        default=list(RECIPES),
        help="recipes of the full runs (default: all; `--recipes default` is the quick epoch-ratio check)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    prep_run = args.out / "prep-only"
    if not (prep_run / "prep" / "prep.json").is_file():
        run_prep(args.data, prep_run)
    results: dict[str, Any] = {"machine": platform.machine(), "threads": args.threads, "steps": {}}
    for recipe in ("default", "original"):
        batch = RECIPES[recipe].batch_size
        r = step_throughput(prep_run, batch, args.threads, args.step_rows, args.rounds)
        results["steps"][f"batch_{batch}"] = r
        print(
            f"batch {batch}: fast {r['fast']:,.0f} rows/s, autograd {r['autograd']:,.0f} rows/s, "
            f"ratio {r['ratio']:.2f}x (medians of {args.rounds} alternating rounds; best rounds "
            f"{r['ratio_best_rounds']:.2f}x; {args.threads} threads, same rows)",
            flush=True,
        )
    if args.ratio_epochs > 0:
        ratio = interleaved_epochs(prep_run, args.out / "interleaved", args.ratio_epochs, args.threads)
        results["epoch_vs_step_only"] = ratio
        for i, e in enumerate(ratio["epochs"], start=1):
            blocks = e["block_ratios"]
            print(
                f"default epoch {i} (interleaved): {e['rows']:,} rows, epoch {e['epoch_s']:.1f} s, step-only "
                f"{e['step_only_s']:.1f} s (the epoch's own steps {e['own_step_s']:.1f} s, waiting for the reader "
                f"{e['reader_wait_s']:.1f} s), epoch time / step-only time {e['ratio']:.3f}x (target <= 1.2; "
                f"{len(blocks)} blocks: median {float(np.median(blocks)):.3f}x, min {min(blocks):.3f}x, "
                f"max {max(blocks):.3f}x; {args.threads} threads; peak RSS of the benchmark process "
                f"{ratio['peak_rss_mib']} MiB)",
                flush=True,
            )
    if not args.skip_full:
        extra = ["--epochs", str(args.epochs), "--threads", str(args.threads)]
        results["full"] = [full_run(args.data, args.out / recipe, recipe, extra) for recipe in args.recipes]
        for f in results["full"]:
            f["epoch_vs_own_steps"] = own_step_ratios(f)
            times = ", ".join(f"{t:.1f}" for t in f["epoch_time_s"])
            print(
                f"{f['recipe']}: {f['rows_per_epoch']:,} rows/epoch, epoch times [{times}] s, "
                f"peak RSS {f['peak_rss_mib']} MiB, test accuracy {f['test_accuracy']:.4f}, "
                f"ROC-AUC {f['test_roc_auc']:.4f}; epoch time / its own train steps "
                f"{_ratios(f['epoch_vs_own_steps'])}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
