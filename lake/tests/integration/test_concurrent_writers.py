"""Concurrent writers on SeaweedFS (issue 16.1): commits are put-if-absent, so racing writers never overwrite
each other. Two processes append to one table at once (every commit lands once, versions contiguous, no row lost);
a writer whose snapshot went stale is retried (an append) or refused with a commit conflict (a delete), never
silently applied over the other's commit."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from forkcast_devservers.servers import Seaweed
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import UnsafeStorageError, storage_options

COMMITS_PER_WRITER = 5
_buckets = itertools.count()

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake
    from forkcast_lake.storage import storage_options

    uri, writer, commits, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    options = storage_options()
    for seq in range(commits):
        # A barrier per round: both writers start commit `seq` from the same table version, so they race for
        # the same log file every round, however loaded the machine is.
        (gate / f"{seq}-{writer}").touch()
        while len(list(gate.glob(f"{seq}-*"))) < 2:
            time.sleep(0.002)
        rows = pa.table({"writer": [writer] * 3, "seq": [seq] * 3, "part": [0, 1, 2]})
        write_deltalake(uri, rows, mode="append", storage_options=options,
                        commit_properties=CommitProperties(custom_metadata={"writer": writer}))
    """
)


@pytest.fixture
def table(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty Delta table in a fresh bucket, the S3 settings in the environment."""
    bucket = f"lake-race-{next(_buckets)}"
    seaweed.create_bucket(bucket)
    for name, value in seaweed.client_env(bucket).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    get_settings.cache_clear()
    uri = f"s3://{bucket}/race"
    schema = pa.schema([("writer", pa.string()), ("seq", pa.int64()), ("part", pa.int64())])
    DeltaTable.create(uri, schema=schema, storage_options=storage_options())
    yield uri
    get_settings.cache_clear()


def test_two_processes_appending_at_once_land_every_commit_exactly_once(table: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, table, name, str(COMMITS_PER_WRITER), str(gate)],
            env=dict(os.environ),
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]

    dt = DeltaTable(table, storage_options=storage_options())
    history = sorted(dt.history(), key=lambda c: int(c["version"]))
    assert [int(c["version"]) for c in history] == list(range(2 * COMMITS_PER_WRITER + 1))  # contiguous
    writers = [str(c.get("writer")) for c in history[1:]]
    assert sorted(writers) == ["a"] * COMMITS_PER_WRITER + ["b"] * COMMITS_PER_WRITER  # each commit once
    rows = dt.to_pyarrow_table().to_pylist()
    keys = sorted((r["writer"], r["seq"], r["part"]) for r in rows)
    expected = sorted((w, s, p) for w in "ab" for s in range(COMMITS_PER_WRITER) for p in range(3))
    assert keys == expected  # no row lost, none duplicated
    # The writers really raced: with a barrier per round, each round's two commits are adjacent, so the writer
    # changes at least once per round (without the barrier, under load, one could finish before the other began).
    switches = sum(1 for x, y in itertools.pairwise(writers) if x != y)
    assert switches >= COMMITS_PER_WRITER, writers


def test_a_stale_append_is_retried_at_the_next_version_not_written_over_the_other(table: str) -> None:
    options = storage_options()
    first, stale = DeltaTable(table, storage_options=options), DeltaTable(table, storage_options=options)
    write_deltalake(first, pa.table({"writer": ["a"], "seq": [0], "part": [0]}), mode="append")
    # `stale` still believes version 0 is the newest: its commit of version 1 finds the file taken (412).
    write_deltalake(stale, pa.table({"writer": ["b"], "seq": [0], "part": [0]}), mode="append")
    dt = DeltaTable(table, storage_options=options)
    assert dt.version() == 2
    assert sorted(r["writer"] for r in dt.to_pyarrow_table().to_pylist()) == ["a", "b"]


def test_a_stale_delete_is_refused_with_a_commit_conflict(table: str) -> None:
    options = storage_options()
    write_deltalake(
        table, pa.table({"writer": ["a"], "seq": [0], "part": [0]}), mode="append", storage_options=options
    )
    first, stale = DeltaTable(table, storage_options=options), DeltaTable(table, storage_options=options)
    first.delete("seq = 0")
    with pytest.raises(CommitFailedError, match="concurrent transaction deleted data this operation read"):
        stale.delete("seq = 0")
    assert DeltaTable(table, storage_options=options).version() == 2  # create, append, the first delete


def test_the_unsafe_rename_mode_is_refused(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
    with pytest.raises(UnsafeStorageError, match="AWS_S3_ALLOW_UNSAFE_RENAME is set"):
        storage_options()
