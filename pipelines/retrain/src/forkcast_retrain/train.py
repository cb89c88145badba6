"""train: stream every training row every epoch through the RankNet, fast path or plain autograd.

Per epoch the file order is shuffled (seeded by recipe seed and epoch), each file is shuffled within itself, and
the batches are consecutive slices of the gathered file, so every row is used exactly once per epoch. A
checkpoint after every epoch makes an interrupted run resumable; a non-finite loss stops the run at once and
saves the batch that produced it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from forkcast_contract.model_format import SCALER_FILE, TRAIN_LOG_FILE
from forkcast_retrain.checkpoint import clear_checkpoints, list_checkpoints, load_checkpoint, save_checkpoint
from forkcast_retrain.distributed import (
    World,
    allreduce_step,
    allreduce_sum,
    broadcast_parameters,
    close_world,
    init_world,
)
from forkcast_retrain.errors import DataError, TrainingAbortedError
from forkcast_retrain.fastpath import autograd_loss_and_grads, fast_loss_and_grads
from forkcast_retrain.metrics import BinnedAuc
from forkcast_retrain.model import build_model, build_optimizer
from forkcast_retrain.prep import load_prepared
from forkcast_retrain.recipes import Recipe
from forkcast_retrain.stream import Batch, FeatureGatherer, epoch_batches, epoch_files

# What turns an epoch's files into batches: ``stream.epoch_batches`` (gatherer, files, shuffle rng, batch size).
# A parameter only so that the training benchmark can time step-only steps between slices of this very loop
# (benchmarks/bench_train.py, ``Interleaved``); training always uses the default.
Feed = Callable[[FeatureGatherer, list[Path], np.random.Generator, int], Iterator[Batch]]

TRAIN_SUMMARY_FILE = "train.json"
NAN_BATCH_FILE = "nan_batch.pt"


@dataclass(frozen=True)
class TrainOptions:
    """How to train (the recipe says what): code path, threads, progress, restart."""

    recipe: Recipe
    fast: bool = True
    threads: int | None = None
    fused_adam: bool = True
    progress: bool = True
    restart: bool = False


def default_threads(world: World) -> int:
    """All cores shared evenly by the local processes (2 on the 2-core VM; 1 each under a 2-process torchrun)."""
    return max(1, (os.cpu_count() or 1) // world.local_size)


# Training accuracy and AUC are updated every ~256 k rows instead of every batch: one bincount over 256 k rows
# costs about what one over 4 k rows does (per-call overhead), which saved ~1 s per 50 M-row epoch.
_METRIC_FLUSH_ROWS = 1 << 18


def _flush_metrics(pending: list[tuple[torch.Tensor, torch.Tensor]], auc: BinnedAuc) -> int:
    """Fold the pending batches' logits into ``auc``; returns their number of correct predictions."""
    if not pending:
        return 0
    logits = torch.cat([p[0] for p in pending]).numpy()
    labels = torch.cat([p[1] for p in pending]).numpy()
    pending.clear()
    auc.update(logits, labels)
    return int(((logits > 0) == (labels > 0.5)).sum())


def _resume_state(run_dir: Path, opts: TrainOptions, fingerprint: str) -> dict[str, Any] | None:
    if opts.restart:
        clear_checkpoints(run_dir)
        return None
    found = list_checkpoints(run_dir)
    if not found:
        return None
    state = load_checkpoint(found[-1])
    mine = {**opts.recipe.as_dict(), "epochs": None}
    theirs = {**state["recipe"], "epochs": None}
    if mine != theirs or state["data_fingerprint"] != fingerprint:
        raise DataError(
            f"{run_dir} holds checkpoints of another recipe or dataset ({state['recipe']}); "
            "use another --out or pass --restart to discard them"
        )
    return state


def run_train(
    run_dir: Path, opts: TrainOptions, log: Callable[[str], None] = print, feed: Feed = epoch_batches
) -> dict[str, Any]:
    """Train into ``run_dir`` (which prep has filled); returns the summary written to ``train.json``."""
    world = init_world()
    finished = False
    try:
        summary = _train(run_dir, opts, world, log, feed)
        finished = True
        return summary
    finally:
        close_world(world, finished)


def _train(
    run_dir: Path, opts: TrainOptions, world: World, log: Callable[[str], None], feed: Feed
) -> dict[str, Any]:
    recipe = opts.recipe
    threads = opts.threads or default_threads(world)
    torch.set_num_threads(threads)
    prepared = load_prepared(run_dir)
    fingerprint = prepared.info["data_fingerprint"]
    mean, std = prepared.mean, prepared.std
    if not recipe.standardize:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    gatherer = FeatureGatherer(prepared, mean, std)

    model = build_model(recipe.seed)
    optimizer = build_optimizer(model, recipe.lr, fused=opts.fused_adam)
    params = list(model.parameters())
    history: list[dict[str, Any]] = []
    state = _resume_state(run_dir, opts, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        log(f"resuming after epoch {state['epoch']} from {list_checkpoints(run_dir)[-1]}")
    broadcast_parameters(world, params)
    if world.is_main:
        (run_dir / TRAIN_LOG_FILE).write_text("".join(json.dumps(h) + "\n" for h in history))

    step = fast_loss_and_grads if opts.fast else autograd_loss_and_grads
    files = prepared.click_files("train")
    epoch_rows = prepared.info["rows"]["train"]
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        mine = epoch_files(files, recipe.seed, epoch, world.rank, world.size)
        rng = np.random.default_rng([recipe.seed, epoch, world.rank])
        auc = BinnedAuc()
        rows, loss_sum, correct = 0, 0.0, 0
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        pending_rows = 0
        started = time.perf_counter()
        bar = tqdm(
            total=epoch_rows // world.size,
            desc=f"epoch {epoch}/{recipe.epochs}",
            unit="row",
            unit_scale=True,
            disable=not (opts.progress and world.is_main),
            mininterval=1.0,
        )
        step_s = 0.0
        batches = feed(gatherer, mine, rng, recipe.batch_size)
        while True:
            batch = next(batches, None)
            n, local_loss = 0, 0.0
            if batch is not None:
                path, start, x, y = batch.path, batch.start, batch.x, batch.y
                step_started = time.perf_counter()
                loss, logits = step(model, x, y)
                n, local_loss = len(y), float(loss) * len(y)
                step_s += time.perf_counter() - step_started
                if not math.isfinite(local_loss):
                    torch.save(
                        {"x": x.clone(), "y": y.clone(), "model": model.state_dict()},
                        run_dir / NAN_BATCH_FILE,
                    )
                    log(
                        f"non-finite loss at epoch {epoch}, {path} rows {start}..{start + n - 1} (rank {world.rank})"
                    )
                pending.append((logits, y))
                pending_rows += n
                if pending_rows >= _METRIC_FLUSH_ROWS:
                    correct += _flush_metrics(pending, auc)
                    pending_rows = 0
                bar.update(n)
            elif world.size == 1:
                break
            else:
                for p in params:
                    p.grad = None
            total_rows, total_loss = allreduce_step(world, params, n, local_loss)
            if total_rows == 0:
                break
            if not math.isfinite(total_loss):
                raise TrainingAbortedError(
                    f"loss became non-finite in epoch {epoch}; the batch is saved in {run_dir / NAN_BATCH_FILE} "
                    "(lower the learning rate or check the inputs)"
                )
            step_started = time.perf_counter()
            optimizer.step()
            step_s += time.perf_counter() - step_started
            rows += n
            loss_sum += local_loss
        bar.close()
        correct += _flush_metrics(pending, auc)
        counters = allreduce_sum(world, torch.tensor([rows, correct], dtype=torch.float64))
        loss_total = allreduce_sum(world, torch.tensor([loss_sum], dtype=torch.float64))
        auc.hist = allreduce_sum(world, torch.from_numpy(auc.hist)).numpy()
        seconds = time.perf_counter() - started
        rows_all = round(float(counters[0]))
        entry = {
            "epoch": epoch,
            "loss": float(loss_total[0]) / rows_all,
            "acc": float(counters[1]) / rows_all,
            "auc": auc.value(),
            "rows": rows_all,
            "time_s": round(seconds, 3),
            "rows_per_s": round(rows_all / seconds),
            # Time inside this rank's train steps (forward, gradients, Adam): the epoch's compute bound. What the
            # epoch spends beyond it is reading, gathering, bookkeeping (and waiting on other ranks).
            "step_s": round(step_s, 3),
        }
        if rows_all != epoch_rows:
            raise DataError(f"epoch {epoch} used {rows_all:,} rows but dataset.json lists {epoch_rows:,}")
        history.append(entry)
        log(
            f"epoch {epoch}/{recipe.epochs} loss={entry['loss']:.4f} acc={entry['acc']:.4f} "
            f"auc={entry['auc']:.4f} rows={rows_all:,} time={seconds:.1f}s (train steps {step_s:.1f}s)"
        )
        if world.is_main:
            save_checkpoint(
                run_dir,
                epoch,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "recipe": recipe.as_dict(),
                    "data_fingerprint": fingerprint,
                    "history": history,
                },
            )
            with (run_dir / TRAIN_LOG_FILE).open("a") as f:
                f.write(json.dumps(entry) + "\n")

    # A run resumed with fewer epochs than its checkpoints hold keeps all of them (the model is the newest one):
    # what was trained is len(history), whatever this call asked for; both are recorded.
    summary = {
        "recipe": {**recipe.as_dict(), "epochs": len(history)},
        "epochs_requested": recipe.epochs,
        "fast_path": opts.fast,
        "fused_adam": opts.fused_adam,
        "threads_per_process": threads,
        "world_size": world.size,
        "data_fingerprint": fingerprint,
        "training_time_s": round(sum(h["time_s"] for h in history), 3),
        "epochs": history,
        "scaler": "fitted (prep/scaler_fit.npz)" if recipe.standardize else "identity (raw inputs)",
    }
    if world.is_main:
        np.savez(run_dir / SCALER_FILE, mean=mean.astype(np.float32), std=std.astype(np.float32))
        (run_dir / TRAIN_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
