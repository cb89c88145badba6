"""``forkcast-lake compact``: the served log — prediction events, feedback and live feature updates moved from the
events Redis streams into the lake's ``served/*`` tables (forkcast_lake.served_log), exactly once.

Exactly once, the mechanism: the position lives in the table, not in Redis. Every Delta commit of a batch carries a
transaction identifier (a ``txn`` action; Delta protocol, "Transaction Identifiers", delta-io/delta PROTOCOL.md)
with appId ``forkcast-lake-compact/<stream>`` and version = the id of the batch's last stream entry
(forkcast_lake.stream_ids packs it into the int64); the rows and the new position are one atomic commit
(``_delta_log/<n>.json`` is written with a put-if-absent, forkcast_lake.storage). On start, and after any error,
the job reads each table's committed position (delta-rs ``DeltaTable.transaction_version``) and points its consumer
group there (``XGROUP SETID``); it reads the streams after it (``XREADGROUP … NOACK``: the group only delivers, it
is not the record of what is done), writes a batch as ONE commit, and only then trims the stream
(forkcast_lake.compact_trim: never past the committed position nor past what another consumer group, the
online-AUC job, has not yet read or acknowledged). So a crash before the commit re-reads the batch (nothing was
committed); a crash after the commit and before the trim re-reads from the committed position (the committed
entries are not read again); a crash after the trim finds them gone and the position past them. Two compactors
racing (a Recreate rollout that overlaps) can neither commit one batch twice nor skip one: each writes through the
table snapshot it read the position from, and delta-rs refuses a commit whose appId another commit changed since
that snapshot ("Concurrent transaction failed"); and a batch is committed only when its first entry is the stream's
first after the committed position (one consumer group splits delivery between two readers: the other one's
entries would otherwise be skipped). Either way the job reloads the position and drops its buffer.

What is NOT covered: an entry the producers' own ``MAXLEN ~`` cap removes before the job read it (the job is down
or slower than the producers for longer than the cap lasts). ``forkcast_lake_lag_seconds`` and the
LakeCompactionLagging alert say so before that happens.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    """XREADGROUP's reply as the server sent it (``[k, v, k, v, …]`` per entry): no dict built per entry."""
    return response


def app_id(stream: str) -> str:
    """The Delta transaction appId that holds ``stream``'s committed position."""
    return APP_ID_PREFIX + stream


@dataclass
class _Stream:
    spec: ServedTable
    uri: str
    table: DeltaTable | None = None  # the snapshot the position was read from (None: no table yet)
    committed: StreamId | None = None
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
        consumer: str | None = None,
    ) -> None:
        self.client, self.s, self.clock = client, settings, clock
        self.metrics = metrics if metrics is not None else CompactMetrics()
        self.options = options_for(settings.lake_uri, settings)
        self.streams = {t.stream: _Stream(t, table_uri(settings.lake_uri, t.table)) for t in tables}
        self.consumer = consumer or os.environ.get("HOSTNAME", "compact")
        # The same connections, XREADGROUP's reply left raw (the decoders read field lists).
        self._reader = redis.Redis(connection_pool=client.connection_pool)
        self._reader.set_response_callback("XREADGROUP", _raw_reply)
        self._fault = settings.fault_point

    # -- position ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Read every table's committed position and point the consumer group just after it; drop any buffer."""
        for name, st in self.streams.items():
            try:
                st.table = DeltaTable(st.uri, storage_options=self.options)
            except TableNotFoundError:
                st.table = None
            version = None if st.table is None else st.table.transaction_version(app_id(name))
            st.committed = None if version is None else StreamId.from_version(version)
            st.buffer.clear()
            position = str(st.committed or ZERO)
            try:
                self.client.xgroup_create(name, self.s.group, id=position, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                self.client.xgroup_setid(name, self.s.group, id=position)
            log.info("%s: committed position %s in %s", name, position, st.uri)

    # -- one step ------------------------------------------------------------------------------------------------
    def step(self) -> int:
        """Read one round of entries, commit every batch that is due; returns how many entries were read."""
        reply = self._reader.xreadgroup(
            self.s.group,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=self.s.read_count,
            block=self.s.block_ms,
            noack=True,
        )
        now = self.clock()
        read = 0
        streams = reply.items() if isinstance(reply, dict) else reply or []  # RESP3 answers a map
        for key, entries in streams:
            st = self.streams[key.decode() if isinstance(key, bytes) else str(key)]
            if entries and not st.buffer:
                st.opened = now
            st.buffer.extend(entries)
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
        if not self._contiguous(st, entries[0][0]):
            # Another reader of our group took the entries between our position and this batch (a second
            # compactor during a rollout): committing would move the position past rows nobody wrote.
            log.warning("%s: batch does not start right after %s; reloading the position", name, st.committed)
            self.start()
            return
        decoded = st.spec.decode(entries)
        self._hook("before-commit")
        commit = CommitProperties(app_transactions=[Transaction(app_id(name), last.to_version())])
        try:
            if st.table is None:  # the first batch creates the table (with its schema and partitioning)
                write_deltalake(
                    st.uri,
                    decoded.table,
                    mode="append",
                    partition_by=list(PARTITION_BY),
                    storage_options=self.options,
                    commit_properties=commit,
                )
                st.table = DeltaTable(st.uri, storage_options=self.options)
            else:
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

    def _contiguous(self, st: _Stream, first: bytes) -> bool:
        """Whether ``first`` is the stream's first entry after the committed position (none lies between)."""
        start = "-" if st.committed is None else f"({st.committed}"
        head = self.client.xrange(st.spec.stream, min=start, max="+", count=1)
        return bool(head) and head[0][0] == first

    def trim(self, st: _Stream) -> int:
        removed, bound = trim(self.client, st.spec.stream, self.s.group, st.committed)
        self.metrics.trimmed.labels(st.spec.stream).inc(removed)
        log.debug("%s: trimmed %d below %s (held by %s)", st.spec.stream, removed, bound.min_id, bound.held_by)
        return removed

    # -- lag ------------------------------------------------------------------------------------------------------
    def update_lag(self) -> None:
        """Entries not yet committed (Redis' group lag + our buffer) and the oldest one's age, per stream."""
        now = self.clock()
        for name, st in self.streams.items():
            start = "-" if st.committed is None else f"({st.committed}"
            oldest = self.client.xrange(name, min=start, max="+", count=1)
            age = max(0.0, now - StreamId.parse(oldest[0][0]).ms / 1000) if oldest else 0.0
            self.metrics.lag_seconds.labels(name).set(age)
            group_lag = None
            for info in self.client.xinfo_groups(name):
                group = info.get("name")
                if (group.decode() if isinstance(group, bytes) else group) == self.s.group:
                    group_lag = info.get("lag")
            if group_lag is not None:
                self.metrics.lag_entries.labels(name).set(int(group_lag) + len(st.buffer))

    # -- test hook ------------------------------------------------------------------------------------------------
    def _hook(self, point: FaultPoint) -> None:
        """Tests only (FORKCAST_COMPACT_FAULT): mark the file and stop dead here, for the test to SIGKILL us."""
        if self._fault is None or self._fault[0] != point:
            return
        self._fault[1].write_text(f"{os.getpid()} {point}\n")
        log.warning("fault hook: stopped at %s", point)
        while True:  # pragma: no cover - ends by SIGKILL
            time.sleep(60)
