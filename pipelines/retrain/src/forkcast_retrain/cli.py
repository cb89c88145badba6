"""``forkcast-retrain``: the retraining steps as one CLI (SPEC §8), each step reading and writing a run directory.

Separate subcommands let GitLab CI or an Argo Workflow run prep, train and evaluate as separate jobs; ``all`` runs
them in one process for local use. ``train`` also runs under ``torchrun --nproc-per-node N`` (data-parallel).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from forkcast_lake.datasets_read import add_data_arguments
from forkcast_retrain.cli_release import RELEASE_COMMANDS, add_release_commands, run_release_command
from forkcast_retrain.errors import DataError, TrainingAbortedError
from forkcast_retrain.recipes import RECIPES

if TYPE_CHECKING:
    from forkcast_retrain.train import TrainOptions


def _add_data(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)


def _add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (created; every step reads/writes it)"
    )


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="default",
        help="named settings: default = standardised inputs, batch 4096, lr 1e-3, 5 epochs (best measured test "
        "accuracy); original = raw inputs, batch 1024, lr 1e-8, 5 epochs (the original assignment)",
    )
    g.add_argument("--epochs", type=int, help="override the recipe's number of epochs (every row each epoch)")
    g.add_argument(
        "--batch-size",
        type=int,
        help="override the recipe's batch size (rows per Adam step and process; under torchrun the global batch is "
        "processes x this)",
    )
    g.add_argument("--lr", type=float, help="override the recipe's Adam learning rate")
    g.add_argument(
        "--seed", type=int, help="override the seed of the initial weights and the shuffling (default 0)"
    )
    g.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override whether inputs are standardised with the scaler fitted by prep",
    )
    g.add_argument(
        "--autograd",
        action="store_true",
        help="use the plain PyTorch autograd loop (the baseline) instead of the exact W2·W1 fast path",
    )
    g.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: CPU cores / processes on this node)",
    )
    g.add_argument(
        "--no-fused-adam", action="store_true", help="use the for-each Adam instead of the fused kernel"
    )
    g.add_argument(
        "--no-progress", action="store_true", help="no tqdm progress bar (the per-epoch lines stay)"
    )
    g.add_argument(
        "--restart",
        action="store_true",
        help="discard this run's epoch checkpoints and train from scratch (default: resume after the last one)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkcast-retrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "prep", help="check the dataset; write feature arrays, id lookups and the scaler to RUN/prep"
    )
    _add_data(p)
    _add_out(p)
    p = sub.add_parser("train", help="train the RankNet on every training row; per-epoch checkpoints and log")
    _add_out(p)
    _add_train(p)
    p = sub.add_parser("evaluate", help="score the test files; write metrics.json, model.pt, scaler.npz")
    _add_out(p)
    p = sub.add_parser("all", help="prep, train and evaluate in one process")
    _add_data(p)
    _add_out(p)
    _add_train(p)
    add_release_commands(sub)  # gate, publish, promote (issue 5)
    return parser


def _options(args: argparse.Namespace) -> TrainOptions:
    from forkcast_retrain.train import TrainOptions

    recipe = RECIPES[args.recipe].with_overrides(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        standardize=args.standardize,
    )
    if recipe.epochs < 1 or recipe.batch_size < 1 or not recipe.lr > 0:
        raise DataError(f"epochs and batch size must be >= 1 and lr > 0 (got {recipe})")
    return TrainOptions(
        recipe=recipe,
        fast=not args.autograd,
        threads=args.threads,
        fused_adam=not args.no_fused_adam,
        progress=not args.no_progress,
        restart=args.restart,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in RELEASE_COMMANDS:
        return run_release_command(args)
    # Imported here: torch alone takes seconds to import, and the release commands (promote) never need it.
    from forkcast_retrain.evaluate import run_evaluate
    from forkcast_retrain.prep import run_prep
    from forkcast_retrain.train import run_train

    try:
        if args.command in ("prep", "all"):
            run_prep(args.data, args.out, args.data_version)
            print(f"prep done: {args.out / 'prep'}")
        if args.command in ("train", "all"):
            run_train(args.out, _options(args), log=lambda s: print(s, flush=True))
        if args.command in ("evaluate", "all"):
            run_evaluate(args.out)
    except (DataError, FileNotFoundError, TrainingAbortedError) as exc:
        print(f"forkcast-retrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
