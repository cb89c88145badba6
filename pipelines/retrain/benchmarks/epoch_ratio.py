"""An epoch's time over the step-only time of its rows, both measured interleaved in one process (issue 19 item 5).

Why interleaved: on the shared 2-core VM the speed moves 2-3x within minutes, so an epoch timed now over a
step-only rate timed earlier measured the load, not the trainer (0.41x-2.31x across runs with no change of code,
pipelines/retrain/BENCHMARKS.md). Here the real trainer (``run_train``, its loop, its reader thread) trains real
epochs on full data, and every ``every`` batches the feed pauses it for a step-only segment: the same number of
train steps with the same row counts, the same step function, threads and batch shapes, on inputs gathered
before the epoch (nothing read, shuffled or gathered). Segments a fraction of a second apart see the same load,
so drift hits both sides alike, and the spread over blocks of segments shows how much noise is left.

Why it is fair:
* The epoch side is the trainer's own epoch: every row of every file once, its own model and optimizer, its own
  bookkeeping (metrics, progress, checkpoint). Its time is the trainer's ``time_s`` minus what the benchmark
  inserted (the step-only segments and building their inputs), so nothing of the epoch is left out.
* The step-only side does only what a train step is (loss and gradients by the same step function,
  ``float(loss)``, the fused Adam step) on a separate model, so training is not changed by it.
* Before each step-only segment the benchmark waits until the reader thread has filled its queue and blocks
  (``EpochReader.wait_idle``), and counts that wait as epoch time: the reader neither takes CPU from the
  step-only steps nor gets ahead for free during them. This can only make the epoch look slower than an
  uninterrupted one (work that would have overlapped the next steps is waited for), never faster.
* The step-only inputs (``pool_rows`` rows, 42 MB at the default) are larger than the caches, as the epoch's
  freshly gathered chunks are, so neither side is helped by cache-hot inputs.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forkcast_retrain.fastpath import fast_loss_and_grads
from forkcast_retrain.model import build_model, build_optimizer
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.stream import Batch, EpochReader, FeatureGatherer
from forkcast_retrain.train import TrainOptions, run_train

# 16 default batches: one reader chunk (stream.CHUNK_ROWS), ~0.1 s of steps at 1 thread. Short enough that the
# load barely moves between an epoch segment and its step-only twin.
SEGMENT_BATCHES = 16


@dataclass
class Interleaved:
    """A ``train.Feed`` that yields the real epoch's batches and runs a step-only segment after every ``every``.

    ``segments`` holds, per segment, (epoch seconds, step-only seconds, rows); ``inserted_s`` per epoch is the
    time the benchmark added inside the trainer's epoch (step-only segments, building their inputs).
    """

    every: int = SEGMENT_BATCHES
    pool_rows: int = 262_144
    seed: int = 0
    segments: list[list[tuple[float, float, int]]] = field(default_factory=list)
    inserted_s: list[float] = field(default_factory=list)
    reader_wait_s: list[float] = field(default_factory=list)  # per epoch: waiting for the next batch or idle
    _pool: tuple[torch.Tensor, torch.Tensor] | None = None
    _model: Any = None
    _optimizer: Any = None
    _next_pool_row: int = 0

    def __call__(
        self, gatherer: FeatureGatherer, files: list[Path], rng: np.random.Generator, batch_size: int
    ) -> Iterator[Batch]:
        self.segments.append([])
        self.inserted_s.append(0.0)
        self.reader_wait_s.append(0.0)
        started = time.perf_counter()
        if self._pool is None:  # inputs for the step-only steps, gathered once, outside every timed segment
            x, y = gatherer.load(files[0], np.random.default_rng(self.seed))
            self._pool = x[: self.pool_rows].clone(), y[: self.pool_rows].clone()
            self._model = build_model(self.seed)
            self._optimizer = build_optimizer(self._model, RECIPES["default"].lr)
        self.inserted_s[-1] += time.perf_counter() - started
        return self._interleave(EpochReader(gatherer, files, rng, batch_size), batch_size)

    def _interleave(self, reader: EpochReader, batch_size: int) -> Iterator[Batch]:
        sizes: list[int] = []
        segment_started = time.perf_counter()
        batches = reader.batches()
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            self.reader_wait_s[-1] += time.perf_counter() - started
            if batch is None:
                break
            yield batch  # the trainer runs this batch's step before asking for the next one
            sizes.append(len(batch.y))
            if len(sizes) == self.every:
                self._step_only_segment(reader, sizes, segment_started, batch_size)
                sizes = []
                segment_started = time.perf_counter()
        if sizes:  # the epoch's last, shorter segment (the reader has ended: no wait)
            self._step_only_segment(reader, sizes, segment_started, batch_size)

    def _step_only_segment(
        self, reader: EpochReader, sizes: list[int], segment_started: float, batch_size: int
    ) -> None:
        waited = time.perf_counter()
        reader.wait_idle()  # epoch time: see the module docstring
        epoch_s = time.perf_counter() - segment_started
        self.reader_wait_s[-1] += time.perf_counter() - waited
        assert self._pool is not None
        px, py = self._pool
        started = time.perf_counter()
        for n in sizes:
            if self._next_pool_row + batch_size > len(py):
                self._next_pool_row = 0
            at = self._next_pool_row
            loss, _ = fast_loss_and_grads(self._model, px[at : at + n], py[at : at + n])
            float(loss)
            self._optimizer.step()
            self._next_pool_row += batch_size
        step_only_s = time.perf_counter() - started
        self.inserted_s[-1] += step_only_s
        self.segments[-1].append((epoch_s, step_only_s, sum(sizes)))


def block_ratios(segments: list[tuple[float, float, int]], blocks: int) -> list[float]:
    """Epoch over step-only time of ``blocks`` consecutive groups of segments (the spread of the ratio)."""
    groups = np.array_split(np.asarray([(e, s) for e, s, _ in segments]), blocks)
    return [float(g[:, 0].sum() / g[:, 1].sum()) for g in groups if len(g)]


def interleaved_epochs(
    prep_run: Path, run: Path, epochs: int, threads: int, blocks: int = 10
) -> dict[str, Any]:
    """``epochs`` epochs of the default recipe on ``prep_run``'s data, each interleaved with its step-only time.

    Trains in ``run`` (its ``prep`` links to ``prep_run``'s, prepared once). Per epoch: the epoch time (the
    trainer's ``time_s`` less what the benchmark inserted), the step-only time of the same rows and their
    ratio, with the ratio of each of ``blocks`` consecutive slices of the epoch as its spread.
    """
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "prep").exists():
        (run / "prep").symlink_to((prep_run / "prep").resolve(), target_is_directory=True)
    recipe = RECIPES["default"].with_overrides(epochs=epochs)
    feed = Interleaved()
    summary = run_train(
        run,
        TrainOptions(recipe=recipe, threads=threads, progress=False, restart=True),
        log=lambda _: None,
        feed=feed,
    )
    out: list[dict[str, Any]] = []
    per_epoch = zip(summary["epochs"], feed.segments, feed.inserted_s, feed.reader_wait_s, strict=True)
    for entry, segments, inserted, reader_wait_s in per_epoch:
        epoch_s = entry["time_s"] - inserted
        step_only_s = sum(s for _, s, _ in segments)
        rows = sum(n for _, _, n in segments)
        if rows != entry["rows"]:
            raise RuntimeError(f"step-only segments covered {rows:,} rows, the epoch {entry['rows']:,}")
        out.append(
            {
                "rows": rows,
                "epoch_s": round(epoch_s, 3),
                "step_only_s": round(step_only_s, 3),
                "own_step_s": entry["step_s"],
                "reader_wait_s": round(reader_wait_s, 3),
                "ratio": round(epoch_s / step_only_s, 3),
                "block_ratios": [round(r, 3) for r in block_ratios(segments, blocks)],
                "segments": len(segments),
            }
        )
    # Peak RSS of this whole process so far (the step comparison's tensors included): an upper bound for training.
    peak_rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"threads": threads, "segment_batches": feed.every, "epochs": out, "peak_rss_mib": peak_rss_mib}
