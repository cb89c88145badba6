"""``python pipelines/retrain/benchmarks/profile_epoch.py``: where an epoch's time goes beyond its train steps.

Trains on the first ``--files`` click files of a prepared run three ways, in alternating rounds, and prints each
slice's time over the time spent inside its own train steps (forward, gradients, Adam), so other tenants' load
hits both sides of each ratio alike:

* ``whole-file``: each file read, shuffled and gathered whole (100 MB of inputs), batches sliced off it (the
  trainer before issue 19);
* ``per-batch``: each file read and shuffled, the features of each batch gathered just before its step;
* ``reader-thread``: ``stream.epoch_batches`` (what ``train`` uses): reading, shuffling and gathering in a reader
  thread, chunks of 65,536 rows, two ahead.

The figures behind the choice in stream.py (BENCHMARKS.md, "An epoch at the compute bound"). Lives beside the
package, not in it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from forkcast_retrain.fastpath import fast_loss_and_grads
from forkcast_retrain.model import build_model, build_optimizer
from forkcast_retrain.prep import load_prepared
from forkcast_retrain.stream import FeatureGatherer, epoch_batches

Source = Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def sources(gatherer: FeatureGatherer, files: list[Path], batch: int) -> dict[str, Source]:
    """The three ways of feeding the same seeded batches to the train steps."""

    def whole_file(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for path in files:
            x, y = gatherer.load(path, rng)
            for s in range(0, len(y), batch):
                yield x[s : s + batch], y[s : s + batch]

    def per_batch(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for path in files:
            rows = gatherer.rows(path, rng)
            for s in range(0, len(rows), batch):
                _, user_rows, restaurant_rows, labels = rows.part(s, s + batch)
                yield gatherer.gather(user_rows, restaurant_rows), labels

    def reader_thread(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in epoch_batches(gatherer, files, rng, batch):
            yield b.x, b.y

    return {"whole-file": whole_file, "per-batch": per_batch, "reader-thread": reader_thread}


def time_slice(source: Source) -> tuple[float, float]:
    """(slice seconds, seconds inside the train steps) of one pass over the files."""
    model = build_model(0)
    optimizer = build_optimizer(model, 1e-3)
    steps = 0.0
    started = time.perf_counter()
    for x, y in source(np.random.default_rng(0)):
        step_started = time.perf_counter()
        loss, _ = fast_loss_and_grads(model, x, y)
        float(loss)
        optimizer.step()
        steps += time.perf_counter() - step_started
    return time.perf_counter() - started, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python pipelines/retrain/benchmarks/profile_epoch.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", type=Path, required=True, help="a run directory that prep has filled")
    parser.add_argument("--files", type=int, default=4, help="click files per slice (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per step (default 4096)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prepared = load_prepared(args.run)
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    ways = sources(gatherer, prepared.click_files("train")[: args.files], args.batch_size)
    for _ in range(args.rounds):
        parts = []
        for name, source in ways.items():
            total, steps = time_slice(source)
            parts.append(f"{name} {total:.4f} s / steps {steps:.4f} s = {total / steps:.2f}x")
        print(" | ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
