"""Click files turned into model inputs, prepared by a reader thread while the train steps run.

An epoch reads one click file (625 k rows) at a time: its rows are checked and shuffled, its ids mapped to
feature-table rows and the 40 standardised features gathered, chunk by chunk, in a reader thread, so the train
loop only slices batches off ready chunks. Profiled on full data (benchmarks/profile_epoch.py: 2-core shared VM,
1 torch thread, 4 files, 2 rounds, load average ~10 from other agents, 2026-12-05), each slice's time over the
time inside its own train steps: the whole file read, shuffled and gathered in the loop 1.40-1.45x; per-batch
gathers in the loop (cache-hot: 1.4-3x cheaper than a whole-file gather) 1.28x; the reader thread 1.06-1.08x.
Timed against step-only steps interleaved with the epoch (benchmarks/epoch_ratio.py, small preset, 6 runs), the
reader thread still cost 1.19-1.69x on this machine, where other agents keep both cores busy and the reader's
CPU is taken from the steps: so the reader now also does less work. It gathers into a few reused chunk buffers
(fresh 10 MB chunks paid page faults on every chunk) straight into each table's columns (no torch.cat), and
shuffles per chunk instead of fancy-indexing whole columns; the batches are the same, bit for bit. Interleaved on
full data it then took 1.15-1.19x the step-only time in three runs at 1 torch thread, and 1.14-1.23x in five at
2 threads on a quiet machine, where the steps' two OpenMP threads and the reader share the two cores (BENCHMARKS.md,
"An epoch at the compute bound" and "A whole `make bench-train`").
Pre-joined standardised shards were not built: they would be 8 GB per epoch to read (50 M x 40 float32) and still
need a per-epoch shuffle gather of the same width, which is the cost measured here.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

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
    """One click file as feature-table rows and labels in file order, and the order to train it in.

    The shuffle is applied per chunk (``part``), not to whole columns up front: three whole-file fancy indexes
    cost 43 ms per 625 k-row file (fresh 5 MB arrays, page faults; median of 10, 2-core shared VM under load,
    2026-12-05) in the reader thread, against a few ms for the chunks' own index_selects.
    """

    path: Path
    source_rows: torch.Tensor  # int64: the row of the file each training position holds (the shuffle itself)
    user_rows: torch.Tensor  # int64 rows of the user table, file order
    restaurant_rows: torch.Tensor  # int64 rows of the restaurant table, file order
    labels: torch.Tensor  # float32 0/1, file order

    def __len__(self) -> int:
        return len(self.labels)

    def part(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training positions ``start..end-1``: (file rows, user-table rows, restaurant-table rows, labels)."""
        source = self.source_rows[start:end]
        return (
            source,
            self.user_rows.index_select(0, source),
            self.restaurant_rows.index_select(0, source),
            self.labels.index_select(0, source),
        )


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
        self.width = self.users.shape[1] + self.restaurants.shape[1]
        self.prepared = prepared

    def rows(self, path: Path, rng: np.random.Generator | None = None) -> ClickRows:
        """Read and check one click file; its table rows and labels, shuffled when ``rng`` is given."""
        frame = read_checked(path, CLICK_COLUMNS)
        users = frame["user_id"].to_numpy(writable=True)
        rests = frame["restaurant_id"].to_numpy(writable=True)
        clicks = frame["click"].to_numpy(writable=True)
        if not ((clicks == 0) | (clicks == 1)).all():  # 0.4 ms per file against np.isin's 4.3 ms
            raise DataError(f"{path}: click must be 0 or 1")
        # The same seeded permutation as always (numpy's), so a seed trains the same model as before.
        order = np.arange(len(users), dtype=np.int64) if rng is None else rng.permutation(len(users))
        return ClickRows(
            path=path,
            source_rows=torch.from_numpy(order),
            user_rows=torch.from_numpy(self.prepared.user_index.rows(users, str(path))),
            restaurant_rows=torch.from_numpy(self.prepared.restaurant_index.rows(rests, str(path))),
            labels=torch.from_numpy(clicks.astype(np.float32)),
        )

    def gather(
        self, user_rows: torch.Tensor, restaurant_rows: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model inputs (n x 40 float32) of the given table rows, written into ``out`` when given (reused)."""
        if out is None:
            out = torch.empty((len(user_rows), self.width), dtype=torch.float32)
        # index_select writes each table's columns straight into their slice of the 40-wide rows: no
        # intermediate tensors and no torch.cat pass. Into a reused chunk buffer this took 5.5 ms per 65,536 rows
        # against 23.9 ms for index_select + torch.cat into fresh tensors (medians of 30 alternating rounds,
        # 2-core shared VM, 1 thread, 2026-12-05), most of the difference being the page faults of fresh memory.
        k = self.users.shape[1]
        torch.index_select(self.users, 0, user_rows, out=out[:, :k])
        torch.index_select(self.restaurants, 0, restaurant_rows, out=out[:, k:])
        return out

    def load(self, path: Path, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (n x 40 float32) and labels (n float32 0/1) of one whole click file (evaluation, the gate)."""
        rows = self.rows(path, rng)
        _, user_rows, restaurant_rows, labels = rows.part(0, len(rows))
        return self.gather(user_rows, restaurant_rows), labels


def epoch_files(files: list[Path], seed: int, epoch: int, rank: int, world_size: int) -> list[Path]:
    """This rank's click files for ``epoch``: one seeded file order shared by all ranks, dealt round-robin.

    Every rank draws the same order (seeded by seed and epoch only), so the ranks' shares are disjoint and
    together hold every file once.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(files))
    return [files[i] for i in order[rank::world_size]]


# Rows gathered per hand-over from the reader thread: 16 default batches (10 MB of inputs). Handing over single
# batches costs a queue round trip and a GIL hand-off per 4096 rows; whole files (100 MB) double the peak memory.
CHUNK_ROWS = 1 << 16
# Chunks ready ahead of the train steps: enough to ride out a slow read at a file boundary (one file is ~10 chunks
# of gather work but one read), little memory (2 x 10 MB).
_QUEUE_CHUNKS = 2


# glibc's mallopt parameter number for M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3


def _large_blocks_from_mmap() -> None:
    """Make glibc serve every block of 1 MiB or more with mmap, so a freed chunk goes back to the OS at once.

    Why: by default glibc raises its mmap threshold to the size of each mmapped block freed (up to 32 MiB), so
    after the first chunks the 10 MB chunks the reader thread allocates come from its own malloc arena, which
    fragments and keeps growing; setting the threshold turns that adjustment off ("If the parameter is set, the
    dynamic adjustment is disabled", GNU C Library manual, "Malloc Tunable Parameters"). Measured over 20 files
    of full data (reader thread, 1 torch thread): peak RSS 957 MiB without, 772 MiB with; over a whole
    5-epoch `forkcast-retrain all` the process peaked at 1615 MiB without. A no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def _chunks(
    gatherer: FeatureGatherer,
    files: list[Path],
    rng: np.random.Generator,
    chunk_rows: int,
    take_buffer: Callable[[], torch.Tensor],
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Each file's chunks, each gathered into a (chunk_rows x 40) buffer from ``take_buffer``."""
    for path in files:
        rows = gatherer.rows(path, rng)
        for start in range(0, len(rows), chunk_rows):
            end = min(start + chunk_rows, len(rows))
            source, user_rows, restaurant_rows, labels = rows.part(start, end)
            buffer = take_buffer()
            x = gatherer.gather(user_rows, restaurant_rows, out=buffer[: end - start])
            batch = Batch(path=path, start=start, source_rows=source, x=x, y=labels)
            yield batch, buffer


T = TypeVar("T")


class ReaderThread(Generic[T]):
    """Items of ``items`` produced by a background thread, at most ``depth`` ahead of the consumer.

    Iterate it once; a producer exception is raised in the consumer where that item was due. ``wait_idle`` lets
    the training benchmark pause the reader between slices of a real epoch (see ``wait_idle``); training itself
    never calls it. A bounded deque under one condition variable rather than ``queue.Queue``, because "the reader
    is blocked on a full queue" must be observable without a race (queue.Queue cannot say that).
    """

    def __init__(self, items: Iterator[T], depth: int) -> None:
        self._items = items
        self._depth = depth
        self._cond = threading.Condition()
        self._ready: deque[T | BaseException | None] = deque()
        self._waiting_for_room = False  # the producer holds its next item and the queue is full
        self._ended = False
        self._stop = False
        self._thread = threading.Thread(target=self._produce, name="click-reader", daemon=True)
        self._thread.start()

    def _hand_over(self, item: T | BaseException | None) -> bool:
        with self._cond:
            while len(self._ready) >= self._depth and not self._stop:
                self._waiting_for_room = True
                self._cond.notify_all()
                self._cond.wait()
            self._waiting_for_room = False
            if self._stop:
                return False  # the consumer has gone
            self._ready.append(item)
            self._cond.notify_all()
            return True

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._hand_over(item):
                    return
            self._hand_over(None)
        except BaseException as exc:  # handed to the consumer, which raises it where the data was due
            self._hand_over(exc)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                with self._cond:
                    while not self._ready and not self._ended:
                        self._cond.wait()
                    if not self._ready:
                        return
                    item = self._ready.popleft()
                    # Cleared here, not by the producer when it wakes: until then the flag would still say
                    # "idle" although the producer is about to work again.
                    self._waiting_for_room = False
                    self._cond.notify_all()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def wait_idle(self) -> None:
        """Block until the reader has filled the queue and waits for room (or has ended).

        From then until the consumer takes the next item the reader does no work, so the training benchmark can
        time step-only steps between slices of a real epoch without the reader taking CPU from them or getting
        ahead for free; the wait itself is counted as epoch time there.
        """
        with self._cond:
            while not (self._waiting_for_room or self._ended):
                self._cond.wait()

    def close(self) -> None:
        """Stop the reader (after at most the item it is producing) and join it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()


class EpochReader:
    """One epoch's reader thread over ``files`` and the batches sliced off its chunks.

    The chunks are gathered into a handful of reused buffers (the queue's depth + 2: one being filled, one being
    trained on): a chunk's buffer is handed back when the caller asks for the batch after that chunk's last one,
    so a batch's ``x`` is valid until the next batch is requested (the train step is done with it by then;
    ``.clone()`` it to keep it). ``wait_idle`` is for the training benchmark (``ReaderThread.wait_idle``).
    """

    def __init__(
        self,
        gatherer: FeatureGatherer,
        files: list[Path],
        rng: np.random.Generator,
        batch_size: int,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        _large_blocks_from_mmap()
        self.batch_size = batch_size
        self._chunk_shape = (max(1, -(-chunk_rows // batch_size)) * batch_size, gatherer.width)
        self._free: deque[torch.Tensor] = deque()  # appended here, popped by the reader: deque ops are atomic
        self.buffers_allocated = 0
        chunks = _chunks(gatherer, files, rng, self._chunk_shape[0], self._take_buffer)
        self._reader = ReaderThread(chunks, _QUEUE_CHUNKS)

    def _take_buffer(self) -> torch.Tensor:
        """A free chunk buffer, or a new one when all are in use (called by the reader thread only)."""
        if self._free:
            return self._free.popleft()
        self.buffers_allocated += 1
        return torch.empty(self._chunk_shape, dtype=torch.float32)

    def wait_idle(self) -> None:
        """Block until the reader thread has filled its queue and waits (see ``ReaderThread.wait_idle``)."""
        self._reader.wait_idle()

    def batches(self) -> Generator[Batch, None, None]:
        """Consecutive batches of ``batch_size`` rows of each chunk (the last of a file may be short)."""
        for chunk, buffer in self._reader:
            for offset in range(0, len(chunk.y), self.batch_size):
                end = offset + self.batch_size
                yield Batch(
                    path=chunk.path,
                    start=chunk.start + offset,
                    source_rows=chunk.source_rows[offset:end],
                    x=chunk.x[offset:end],
                    y=chunk.y[offset:end],
                )
            self._free.append(buffer)  # the caller has asked for the batch after this chunk's last one


def epoch_batches(
    gatherer: FeatureGatherer,
    files: list[Path],
    rng: np.random.Generator,
    batch_size: int,
    chunk_rows: int = CHUNK_ROWS,
) -> Generator[Batch, None, None]:
    """Every row of ``files`` once, in batches of consecutive positions of each shuffled file.

    A reader thread reads, checks, shuffles and maps each file and gathers its inputs in chunks of
    ``chunk_rows`` (rounded up to whole batches) while the caller trains on the previous chunk; the train loop
    only slices. The thread draws the shuffles from ``rng`` in file order, so the batches are exactly those of
    reading without it. A ``DataError`` of a file surfaces when that file's batches are due; closing the
    generator early (or dropping it) stops the thread. A batch's ``x`` is valid until the next batch is
    requested (``EpochReader``: its memory is reused).
    """
    yield from EpochReader(gatherer, files, rng, batch_size, chunk_rows).batches()
