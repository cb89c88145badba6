"""``forkcast-lake compact``: the served log — prediction events, feedback and live feature updates moved from the
events Redis streams into the lake's ``served/*`` tables (forkcast_lake.served_log), exactly once.

Exactly once, the mechanism: the position lives in the table, not in Redis. Every Delta commit of a batch carries a
transaction identifier (a ``txn`` action; Delta protocol, "Transaction Identifiers", delta-io/delta PROTOCOL.md)
with appId ``forkcast-lake-compact/<stream>`` and version = the id of the batch's last stream entry
(forkcast_lake.stream_ids packs it into the int64); the rows and the new position are one atomic commit
(``_delta_log/<n>.json`` is written with a put-if-absent, forkcast_lake.storage). On start, and after any error,
the job reads each table's committed position (delta-rs ``DeltaTable.transaction_version``) and reads the streams
after it (``XREAD`` from its own cursor: no consumer group, whose delivery state could disagree with the table or be
split between two readers), writes a batch as ONE commit, and only then trims the stream
(forkcast_lake.compact_trim: never past the committed position, nor past what a consumer group, the online-AUC
job's, has not yet read or acknowledged, nor into the last FORKCAST_COMPACT_KEEP_SECONDS). So a crash before the
commit re-reads the batch (nothing was committed); a crash after the commit and before the trim re-reads from the
committed position (the committed entries are not read again); a crash after the trim finds them gone and the
position past them. Two compactors racing (a Recreate rollout that overlaps) can neither commit one batch twice nor
skip one: each reads every entry after the position itself, and writes through the table snapshot it read the
position from; delta-rs refuses a commit whose appId another commit changed since that snapshot ("Concurrent
transaction failed"), upon which the loser reloads the position and drops its buffer.

What is NOT covered: an entry the producers' own ``MAXLEN ~`` cap removes before the job read it (the job is down
or slower than the producers for longer than the cap lasts). ``forkcast_lake_lag_seconds`` and the
LakeCompactionLagging alert say so before that happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from forkcast_lake.compact_metrics import CompactMetrics
from forkcast_lake.compact_settings import CompactSettings, FaultPoint
from forkcast_lake.compact_trim import trim
from forkcast_lake.served_log import PARTITION_BY, SERVED_TABLES, Entry, ServedTable
from forkcast_lake.storage import options_for, table_uri
from forkcast_lake.stream_ids import ZERO, StreamId

log = logging.getLogger("forkcast_lake.compact")

APP_ID_PREFIX = "forkcast-lake-compact/"


def _raw_reply(response: object, **options: object) -> object:
    """XREAD's reply as the server sent it (``[k, v, k, v, …]`` per entry): no dict built per entry."""
    return response


def app_id(stream: str) -> str:
    """The Delta transaction appId that holds ``stream``'s committed position."""
    return APP_ID_PREFIX + stream


@dataclass
class _Stream:
    spec: ServedTable
    uri: str
    table: DeltaTable | None = None  # the snapshot the position was read from (set by start())
    committed: StreamId | None = None
    cursor: StreamId = ZERO  # the last entry read (committed or buffered)
    buffer: list[Entry] = field(default_factory=list)
    opened: float = 0.0  # when the buffer's first entry arrived


class Compactor:
    """State and steps of the job; ``step`` is what the loop, the tests and the benchmark drive."""

    def __init__(
        self,
        client: redis.Redis,
        settings: CompactSettings,
        metrics: CompactMetrics | None = None,
        tables: Sequence[ServedTable] = SERVED_TABLES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.s, self.clock = client, settings, clock
        self.metrics = metrics if metrics is not None else CompactMetrics()
        self.options = options_for(settings.lake_uri, settings)
        self.streams = {t.stream: _Stream(t, table_uri(settings.lake_uri, t.table)) for t in tables}
        # The same connections, XREAD's reply left raw (the decoders read field lists).
        self._reader = redis.Redis(connection_pool=client.connection_pool)
        self._reader.set_response_callback("XREAD", _raw_reply)
        self._fault = settings.fault_point

    # -- position ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Read every table's committed position and move the read cursor there; drop any buffer."""
        for name, st in self.streams.items():
            st.table = self._open(st)
            version = st.table.transaction_version(app_id(name))
            st.committed = None if version is None else StreamId.from_version(version)
            st.buffer.clear()
            st.cursor = st.committed or ZERO
            log.info("%s: committed position %s in %s", name, st.cursor, st.uri)

    def _open(self, st: _Stream) -> DeltaTable:
        """The table's current snapshot; an empty table (schema, partitioning) is created first if there is none,
        so that every batch, the first included, commits through a snapshot and a racing writer is detected."""
        try:
            return DeltaTable(st.uri, storage_options=self.options)
        except TableNotFoundError:
            pass
        with contextlib.suppress(CommitFailedError):  # another writer created it first: theirs stands
            DeltaTable.create(
                st.uri,
                schema=st.spec.schema,
                partition_by=list(PARTITION_BY),
                mode="ignore",
                storage_options=self.options,
            )
        return DeltaTable(st.uri, storage_options=self.options)

    # -- one step ------------------------------------------------------------------------------------------------
    def step(self) -> int:
        """Read one round of entries, commit every batch that is due; returns how many entries were read."""
        reply = self._reader.xread(
            {name: str(st.cursor) for name, st in self.streams.items()},
            count=self.s.read_count,
            block=self.s.block_ms,
        )
        now = self.clock()
        read = 0
        # [[stream, [[id, [field, value, …]], …]], …]; RESP3 answers a map of the same.
        streams = cast(
            Iterable[tuple[bytes, list[Entry]]], reply.items() if isinstance(reply, dict) else reply or []
        )
        for key, entries in streams:
            st = self.streams[key.decode() if isinstance(key, bytes) else str(key)]
            if entries and not st.buffer:
                st.opened = now
            if entries:
                st.buffer.extend(entries)
                st.cursor = StreamId.parse(entries[-1][0])
            read += len(entries)
        for st in self.streams.values():
            if st.buffer and (
                len(st.buffer) >= self.s.batch_entries or now - st.opened >= self.s.batch_seconds
            ):
                self.flush(st)
        return read

    def flush_all(self) -> None:
        """Commit every buffered batch now (the end of a bounded run, and the benchmark)."""
        for st in self.streams.values():
            if st.buffer:
                self.flush(st)

    def flush(self, st: _Stream) -> None:
        """Decode, commit (rows + position in one commit), then trim — in that order (module docstring)."""
        name = st.spec.stream
        entries, st.buffer = st.buffer, []
        last = StreamId.parse(entries[-1][0])
        started = time.perf_counter()
        decoded = st.spec.decode(entries)
        self._hook("before-commit")
        commit = CommitProperties(app_transactions=[Transaction(app_id(name), last.to_version())])
        assert st.table is not None, "start() opens every table"
        try:
            write_deltalake(st.table, decoded.table, mode="append", commit_properties=commit)
        except CommitFailedError:
            # Another compactor committed this stream since our snapshot: its rows stand, ours are dropped.
            log.warning("%s: another writer committed since our snapshot; reloading the position", name)
            self.start()
            return
        st.committed = last
        self.metrics.commit_seconds.labels(st.spec.table).observe(time.perf_counter() - started)
        self.metrics.rows.labels(st.spec.table).inc(decoded.table.num_rows)
        if decoded.malformed:
            self.metrics.malformed.labels(name).inc(decoded.malformed)
            log.warning("%s: %d entries did not decode (no row)", name, decoded.malformed)
        self._hook("after-commit")
        self.trim(st)
        self._hook("after-trim")

    def trim(self, st: _Stream) -> int:
        keep_since = StreamId(max(0, int((self.clock() - self.s.keep_seconds) * 1000)), 0)
        removed, bound = trim(
            self.client, st.spec.stream, st.committed, keep_since if self.s.keep_seconds else ZERO
        )
        self.metrics.trimmed.labels(st.spec.stream).inc(removed)
        log.debug(
            "%s: trimmed %d below %s (held by %s)", st.spec.stream, removed, bound.min_id, bound.held_by
        )
        return removed

    # -- lag ------------------------------------------------------------------------------------------------------
    def update_lag(self) -> None:
        """Entries read but not yet committed, and the age of the oldest entry not yet committed, per stream."""
        now = self.clock()
        for name, st in self.streams.items():
            start = "-" if st.committed is None else f"({st.committed}"
            oldest = self.client.xrange(name, min=start, max="+", count=1)
            age = max(0.0, now - StreamId.parse(cast(bytes, oldest[0][0])).ms / 1000) if oldest else 0.0
            self.metrics.lag_seconds.labels(name).set(age)
            self.metrics.buffered.labels(name).set(len(st.buffer))

    # -- test hook ------------------------------------------------------------------------------------------------
    def _hook(self, point: FaultPoint) -> None:
        """Tests only (FORKCAST_COMPACT_FAULT): mark the file and stop dead here, for the test to SIGKILL us."""
        if self._fault is None or self._fault[0] != point:
            return
        self._fault[1].write_text(f"{os.getpid()} {point}\n")
        log.warning("fault hook: stopped at %s", point)
        while True:  # pragma: no cover - ends by SIGKILL
            time.sleep(60)
