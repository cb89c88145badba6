"""Click files turned into model inputs: each file read once into table rows, the features gathered per batch.

An epoch reads one click file (625 k rows) at a time, shuffles its rows, and maps its ids to feature-table rows
(15 MB of int64s); the 40 features of a batch are gathered from the standardised tables just before its train
step. Gathering per batch instead of per file is what keeps an epoch near the cost of its train steps: the
4096 x 40 batch (640 KB) is written and read back while still in cache, where a whole gathered file (100 MB) is
written to memory and read back later. Measured on the 2-core VM, 1 torch thread, 625 k rows (/tmp probe kept in
BENCHMARKS.md, "An epoch at the compute bound"): 46-161 ms per file gathered batch by batch against 157-239 ms
gathered whole, next to 500-860 ms of train steps. A reader thread reads, checks, shuffles and maps the next file
while the current one trains (parquet decoding and numpy release the GIL), so reading costs the epoch only what
it steals from the compute threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from forkcast_contract.dataset import CLICK_COLUMNS
from forkcast_contract.features import USER_FEATURE_COUNT
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import Prepared
from forkcast_retrain.tables import read_checked


@dataclass(frozen=True)
class ClickRows:
    """One click file as feature-table rows, in training order (shuffled when read with an rng)."""

    path: Path
    source_rows: torch.Tensor  # int64: the row of the file each position holds (the shuffle itself)
    user_rows: torch.Tensor  # int64 rows of the user table
    restaurant_rows: torch.Tensor  # int64 rows of the restaurant table
    labels: torch.Tensor  # float32 0/1

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Batch:
    """Consecutive positions ``start..start+len-1`` of one file's training order, with their gathered inputs."""

    path: Path
    start: int
    source_rows: (
        torch.Tensor
    )  # the file rows these inputs came from (what a test counts to prove once-per-epoch)
    x: torch.Tensor  # (n, 40) float32
    y: torch.Tensor  # (n,) float32


class FeatureGatherer:
    """Holds the (optionally standardised) feature tables as tensors and builds model inputs from click rows.

    Standardising the tables once (1.1 M rows) instead of every gathered row (50 M per epoch) gives the same
    inputs: (x - mean) / std is per feature, so it commutes with the gather.
    """

    def __init__(
        self, prepared: Prepared, mean: npt.NDArray[np.float32], std: npt.NDArray[np.float32]
    ) -> None:
        k = USER_FEATURE_COUNT
        self.users = torch.from_numpy((prepared.users - mean[:k]) / std[:k]).contiguous()
        self.restaurants = torch.from_numpy((prepared.restaurants - mean[k:]) / std[k:]).contiguous()
        self.prepared = prepared

    def rows(self, path: Path, rng: np.random.Generator | None = None) -> ClickRows:
        """Read and check one click file; its table rows and labels, shuffled when ``rng`` is given."""
        frame = read_checked(path, CLICK_COLUMNS)
        users = frame["user_id"].to_numpy(writable=True)
        rests = frame["restaurant_id"].to_numpy(writable=True)
        clicks = frame["click"].to_numpy(writable=True)
        if not np.isin(clicks, (0, 1)).all():
            raise DataError(f"{path}: click must be 0 or 1")
        order = np.arange(len(users), dtype=np.int64)
        if rng is not None:
            # Shuffling the three int columns is cheaper than shuffling the gathered 40-wide rows.
            order = rng.permutation(len(users))
            users, rests, clicks = users[order], rests[order], clicks[order]
        return ClickRows(
            path=path,
            source_rows=torch.from_numpy(order),
            user_rows=torch.from_numpy(self.prepared.user_index.rows(users, str(path))),
            restaurant_rows=torch.from_numpy(self.prepared.restaurant_index.rows(rests, str(path))),
            labels=torch.from_numpy(clicks.astype(np.float32)),
        )

    def gather(self, user_rows: torch.Tensor, restaurant_rows: torch.Tensor) -> torch.Tensor:
        """Model inputs (n x 40 float32) of the given table rows."""
        # torch.index_select is ~1.7x faster than numpy fancy indexing for this gather (31 ms vs 53 ms for
        # 625 k rows of 30 floats on the 2-core VM), and torch.cat writes the 40-wide rows in one pass.
        return torch.cat(
            [self.users.index_select(0, user_rows), self.restaurants.index_select(0, restaurant_rows)], dim=1
        )

    def load(self, path: Path, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (n x 40 float32) and labels (n float32 0/1) of one whole click file (evaluation, the gate)."""
        rows = self.rows(path, rng)
        return self.gather(rows.user_rows, rows.restaurant_rows), rows.labels


def epoch_files(files: list[Path], seed: int, epoch: int, rank: int, world_size: int) -> list[Path]:
    """This rank's click files for ``epoch``: one seeded file order shared by all ranks, dealt round-robin.

    Every rank draws the same order (seeded by seed and epoch only), so the ranks' shares are disjoint and
    together hold every file once.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(files))
    return [files[i] for i in order[rank::world_size]]


def epoch_batches(
    gatherer: FeatureGatherer, files: list[Path], rng: np.random.Generator, batch_size: int
) -> Iterator[Batch]:
    """Every row of ``files`` once, in batches of consecutive positions of each shuffled file.

    One reader thread prepares file i+1 (read, check, shuffle, id lookup) while file i's batches are gathered
    and trained on; the thread draws the shuffles from ``rng`` in file order, so the order is the same as reading
    without it. A ``DataError`` of a file surfaces when that file's batches are due.
    """
    if not files:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="click-reader") as reader:
        pending: Future[ClickRows] = reader.submit(gatherer.rows, files[0], rng)
        try:
            for i in range(len(files)):
                current = pending.result()
                if i + 1 < len(files):
                    pending = reader.submit(gatherer.rows, files[i + 1], rng)
                for start in range(0, len(current), batch_size):
                    end = start + batch_size
                    yield Batch(
                        path=current.path,
                        start=start,
                        source_rows=current.source_rows[start:end],
                        x=gatherer.gather(current.user_rows[start:end], current.restaurant_rows[start:end]),
                        y=current.labels[start:end],
                    )
        finally:
            pending.cancel()  # an abandoned epoch (error, NaN stop) does not read a file nobody will use
