"""The epoch reader (stream.py): every train row exactly once per epoch across ranks, the right features for each
row, the same batches as reading each file whole, a reader thread that stops with its epoch, reuses a few chunk
buffers, and can be held idle (for the training benchmark)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import Prepared, run_prep
from forkcast_retrain.stream import (
    _QUEUE_CHUNKS,
    EpochReader,
    FeatureGatherer,
    ReaderThread,
    epoch_batches,
    epoch_files,
)

# Neither divides the micro files' 4,000 rows, so ragged last batches and chunks are exercised; a chunk is
# rounded up to 4 batches (6,144 rows), so each file is one short chunk.
BATCH, CHUNK = 1536, 5000


@pytest.fixture
def prepared(micro_data: Path, tmp_path: Path) -> Prepared:
    return run_prep(micro_data, tmp_path / "run")


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "click-reader"]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_train_row_is_used_exactly_once_per_epoch_across_ranks(
    prepared: Prepared, world_size: int
) -> None:
    files = prepared.click_files("train")
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    seen = {path: np.zeros(pl.read_parquet(path).height, dtype=np.int64) for path in files}
    for epoch in (1, 2):
        before = {path: counts.copy() for path, counts in seen.items()}
        for rank in range(world_size):
            mine = epoch_files(files, seed=0, epoch=epoch, rank=rank, world_size=world_size)
            rng = np.random.default_rng([0, epoch, rank])
            for batch in epoch_batches(gatherer, mine, rng, BATCH, chunk_rows=CHUNK):
                assert len(batch.y) <= BATCH
                np.add.at(seen[batch.path], batch.source_rows.numpy(), 1)
        # A bitmap per file: each row seen once more this epoch, none twice, none skipped.
        for path, counts in seen.items():
            gained = counts - before[path]
            assert gained.min() == 1 and gained.max() == 1, (path.name, epoch, np.bincount(gained))
    assert sum(len(c) for c in seen.values()) == prepared.info["rows"]["train"]


def test_each_batch_holds_the_standardised_features_and_label_of_its_rows(prepared: Prepared) -> None:
    """Looked up independently of the reader: each row's ids in its parquet file, the tables in their files."""
    data = Path(prepared.info["data_dir"])
    users = pl.read_parquet(data / "user_features.parquet").sort("user_id")
    rests = pl.read_parquet(data / "restaurant_features.parquet").sort("restaurant_id")
    # The generator's ids are 0..N-1, so after sorting an id is its row.
    assert users["user_id"].to_list() == list(range(users.height))
    assert rests["restaurant_id"].to_list() == list(range(rests.height))
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    files = prepared.click_files("train")
    checked = 0
    for batch in epoch_batches(gatherer, files, np.random.default_rng(7), BATCH, chunk_rows=CHUNK):
        clicks = pl.read_parquet(batch.path)[batch.source_rows.numpy()]
        u = users.select(USER_FEATURES).to_numpy()[clicks["user_id"].to_numpy()]
        r = rests.select(RESTAURANT_FEATURES).to_numpy()[clicks["restaurant_id"].to_numpy()]
        expected = (np.hstack([u, r]) - prepared.mean) / prepared.std
        np.testing.assert_allclose(batch.x.numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batch.y.numpy(), clicks["click"].to_numpy().astype(np.float32))
        checked += len(batch.y)
    assert checked == prepared.info["rows"]["train"]


def test_batches_equal_slices_of_each_file_read_whole(prepared: Prepared) -> None:
    """The reader thread and the chunks change when rows are gathered, not which: same seeded shuffle, same
    batches as the whole-file gather the trainer used before, so trained models are unchanged."""
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    files = prepared.click_files("train")
    whole_rng, chunked_rng = np.random.default_rng(3), np.random.default_rng(3)
    expected = []
    for path in files:
        x, y = gatherer.load(path, whole_rng)
        expected += [(path, s, x[s : s + BATCH], y[s : s + BATCH]) for s in range(0, len(y), BATCH)]
    got = []
    # Compared as they come: a batch's inputs live in a reused chunk buffer until the next batch is requested.
    for batch in epoch_batches(gatherer, files, chunked_rng, BATCH, chunk_rows=CHUNK):
        path, start, x, y = expected[len(got)]
        assert (batch.path, batch.start) == (path, start)
        assert torch.equal(batch.x, x) and torch.equal(batch.y, y)
        got.append((batch.path, batch.start))
    assert got == [(p, s) for p, s, _, _ in expected]


def test_a_bad_file_stops_the_epoch_naming_it_and_the_reader_ends(prepared: Prepared) -> None:
    files = prepared.click_files("train")
    bad = files[1]
    frame = pl.read_parquet(bad)
    frame.with_columns(pl.lit(2, pl.Int64).alias("click")).write_parquet(bad)
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    seen_files: list[Path] = []
    with pytest.raises(DataError, match=f"{bad}: click must be 0 or 1"):
        seen_files.extend(
            b.path for b in epoch_batches(gatherer, files, np.random.default_rng(0), BATCH, chunk_rows=CHUNK)
        )
    assert set(seen_files) == {files[0]}  # the first file trained in full before the bad one was due
    assert _reader_threads() == []


def test_an_abandoned_epoch_stops_its_reader_thread(prepared: Prepared) -> None:
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    batches = epoch_batches(
        gatherer, prepared.click_files("train"), np.random.default_rng(0), 256, chunk_rows=256
    )
    next(batches)
    assert len(_reader_threads()) == 1  # reading ahead while the first batch trains
    batches.close()  # what a NaN stop or an exception in the train loop does to the generator
    assert _reader_threads() == []


def test_an_epoch_gathers_into_a_few_reused_chunk_buffers(prepared: Prepared) -> None:
    """48 chunks of 256 rows pass through at most queue depth + 2 buffers (one filled, one trained on): fresh
    10 MB chunks cost page faults on every chunk (23.9 vs 5.5 ms per 65,536 rows measured). The batches are
    still right (compared as they come with the whole-file gather), so reuse never overwrites a live batch."""
    gatherer = FeatureGatherer(prepared, prepared.mean, prepared.std)
    files = prepared.click_files("train")
    reader = EpochReader(gatherer, files, np.random.default_rng(5), 256, chunk_rows=256)
    whole_rng = np.random.default_rng(5)
    expected = {path: gatherer.load(path, whole_rng) for path in files}
    chunks = 0
    for batch in reader.batches():
        x, y = expected[batch.path]
        assert torch.equal(batch.x, x[batch.start : batch.start + 256])
        assert torch.equal(batch.y, y[batch.start : batch.start + 256])
        chunks += 1
    assert chunks == sum(-(-len(y) // 256) for _, y in expected.values()) == 48
    assert reader.buffers_allocated <= _QUEUE_CHUNKS + 2


def test_wait_idle_returns_once_the_reader_is_blocked_on_a_full_queue_and_it_stays_blocked() -> None:
    """What the training benchmark relies on to time step-only steps with the reader doing nothing."""
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    reader = ReaderThread(items(), depth=2)
    consumer = iter(reader)
    taken = [next(consumer) for _ in range(3)]
    reader.wait_idle()
    # 3 taken, 2 queued, 1 held by the producer while it waits for room: nothing more until the next take.
    assert len(produced) == len(taken) + 2 + 1
    time.sleep(0.05)
    assert len(produced) == 6
    assert [*taken, *consumer] == list(range(20))
    reader.wait_idle()  # an ended reader is idle too
    assert _reader_threads() == []
