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
or slower than the producers for longer than the cap lasts); ``XREAD`` after the cursor passes over such a gap
silently. So the job watches for it, from Redis alone (``check_streams``, also while S3 is down): it exports
``forkcast_lake_last_commit_timestamp_seconds`` (the LakeCommitStale alert pages a few minutes into an outage, well
before a cap is reached) and counts what a cap took. ``XINFO STREAM``'s ``max-deleted-entry-id`` cannot tell: on
Redis 7.0.15 it stays ``0-0`` through ``XADD … MAXLEN`` and ``XTRIM`` (measured here; only ``XDEL`` moves it). What
can: trims remove from the head, so every id below the stream's first entry is gone and every id from it on is
there, i.e. ``entries-added − length`` entries were ever added below the first entry. If the first entry lies past
the read position, that number less the count of entries ever added up to the read position is what was trimmed
unread. The job keeps that count (``_Stream.added``): learnt while it is at the head of the stream (``entries-added``
less the entries after its cursor), advanced by every entry it reads, and stored with each commit
(``COMMIT_ADDED_KEY``) so that a restart knows it too. The difference goes to ``forkcast_lake_lost_entries_total``
(the LakeEntriesLost alert pages on any increase).
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
from forkcast_lake.served_log import PARTITION_BY, SERVED_TABLES, Entry, ServedTable, decode_batch
from forkcast_lake.storage import options_for, table_uri
from forkcast_lake.stream_ids import ZERO, StreamId

log = logging.getLogger("forkcast_lake.compact")

APP_ID_PREFIX = "forkcast-lake-compact/"
# At most this many entries after the cursor are read to learn how many were ever added up to it (``_loss``).
LOSS_PROBE_COUNT = 1000
# Commit metadata (Delta commitInfo): the batch's last entry id and how many entries were ever added to the stream up
# to it, for the loss count after a restart; the last HISTORY_SCAN commits are searched (other writers, retention's
# deletes and file compaction, may have committed since).
COMMIT_POSITION_KEY = "forkcast.stream_position"
COMMIT_ADDED_KEY = "forkcast.stream_entries_added"
HISTORY_SCAN = 20


def _added_in_history(table: DeltaTable, position: StreamId) -> int | None:
    """How many entries were ever added up to ``position``, as the commit that stored it recorded; None if none."""
    for info in table.history(HISTORY_SCAN):
        if info.get(COMMIT_POSITION_KEY) == str(position) and COMMIT_ADDED_KEY in info:
            return int(info[COMMIT_ADDED_KEY])
    return None


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
    # Loss accounting (module docstring): how many entries were ever added to the stream up to the cursor and up to
    # the committed position (None: not learnt yet), and the gap counted last (every id below gap_before was
    # trimmed, unread ones counted; added_before_gap entries were ever added below it).
    added: int | None = None
    added_at_committed: int | None = None
    gap_before: StreamId = ZERO
    added_before_gap: int = 0


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
        for (
            name
        ) in self.streams:  # at 0 from the start: increase() over a series that appears at 1 sees nothing
            self.metrics.lost.labels(name)
            self.metrics.malformed.labels(name)

    # -- position ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Read every table's committed position and move the read cursor there; drop any buffer."""
        for name, st in self.streams.items():
            st.table = self._open(st)
            version = st.table.transaction_version(app_id(name))
            committed = None if version is None else StreamId.from_version(version)
            if (
                committed != st.committed
            ):  # another writer moved it: what we counted up to it no longer applies
                st.added_at_committed = None
            st.committed = committed
            if st.added_at_committed is None and committed is not None:
                st.added_at_committed = _added_in_history(st.table, committed)
            st.buffer.clear()
            st.cursor = st.committed or ZERO
            st.added = st.added_at_committed
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
                # Past a counted gap, the first entry read follows it (every id below gap_before is gone).
                base = st.added_before_gap if st.cursor < st.gap_before else st.added
                st.added = None if base is None else base + len(entries)
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
        decoded = decode_batch(st.spec, entries)
        self._hook("before-commit")
        counted = (
            {} if st.added is None else {COMMIT_POSITION_KEY: str(last), COMMIT_ADDED_KEY: str(st.added)}
        )
        commit = CommitProperties(
            app_transactions=[Transaction(app_id(name), last.to_version())], custom_metadata=counted
        )
        assert st.table is not None, "start() opens every table"
        try:
            write_deltalake(st.table, decoded.table, mode="append", commit_properties=commit)
        except CommitFailedError:
            # Another compactor committed this stream since our snapshot: its rows stand, ours are dropped.
            log.warning("%s: another writer committed since our snapshot; reloading the position", name)
            self.start()
            return
        st.committed = last
        st.added_at_committed = st.added  # the buffer held every entry read, so the cursor is ``last``
        self.metrics.last_commit.labels(name).set(self.clock())
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

    # -- lag and loss (Redis alone) -------------------------------------------------------------------------------
    def check_streams(self) -> None:
        """Lag, freshness and lost entries of every stream, from Redis alone: run_forever calls it in a try of its
        own, so an S3 outage (start() and step() failing) leaves these series moving and the alerts able to fire."""
        for name, st in self.streams.items():
            self._lag(name, st)
            if (
                st.table is not None
            ):  # the committed position was read at least once: a gap can be told from a trim
                self._loss(name, st)

    def _lag(self, name: str, st: _Stream) -> None:
        """Entries read but not yet committed, and the age of the oldest entry not yet committed; a stream with
        nothing left to commit counts as committed now (an idle stream is no outage for LakeCommitStale)."""
        now = self.clock()
        start = "-" if st.committed is None else f"({st.committed}"
        oldest = self.client.xrange(name, min=start, max="+", count=1)
        age = max(0.0, now - StreamId.parse(cast(bytes, oldest[0][0])).ms / 1000) if oldest else 0.0
        self.metrics.lag_seconds.labels(name).set(age)
        self.metrics.buffered.labels(name).set(len(st.buffer))
        if not oldest:
            self.metrics.last_commit.labels(name).set(now)

    def _loss(self, name: str, st: _Stream) -> None:
        """Count the entries trimmed before the job read them (module docstring), each gap once."""
        behind_gap = st.cursor < st.gap_before
        # Every id below ``mark`` was read or is counted lost; ``added_below_mark`` entries were ever added below it.
        mark = st.gap_before if behind_gap else st.cursor.next()
        added_below_mark = st.added_before_gap if behind_gap else st.added
        learn = st.added is None and not behind_gap
        pipe = self.client.pipeline(transaction=False)
        if learn:  # only until the count is known: then XINFO alone
            pipe.xrange(name, min=f"({st.cursor}", max="+", count=LOSS_PROBE_COUNT)
        pipe.xinfo_stream(name)
        try:
            *probe, info = pipe.execute()
        except redis.ResponseError:  # no such key: nothing was ever added, nothing lost
            return
        after = probe[0] if learn else []
        added, length = int(info["entries-added"]), int(info["length"])
        last_id = StreamId.parse(cast(bytes, info["last-generated-id"]))
        first = info.get("first-entry")
        # Trims remove from the head: every id below the first entry is gone, every id from it on is there, so
        # ``added - length`` entries were ever added below it.
        first_id = StreamId.parse(cast(bytes, first[0])) if first else last_id.next()
        if first_id > mark and added_below_mark is not None:
            lost = added - length - added_below_mark
            if lost > 0:
                self.metrics.lost.labels(name).inc(lost)
                log.error(
                    "%s: %d entries below %s were trimmed (the producers' MAXLEN cap) before the lake read them",
                    name,
                    lost,
                    first_id,
                )
                st.gap_before, st.added_before_gap = first_id, added - length
        elif learn and len(after) < LOSS_PROBE_COUNT:
            # Near the head: the count up to the cursor is the total less the entries after it, provided nothing
            # was added between the two replies. (A gap right after the cursor is taken in here uncounted: the
            # count is learnt after a start without one in the table, and LakeCompactionLagging covers that case.)
            newest = StreamId.parse(cast(bytes, after[-1][0])) if after else st.cursor
            if newest == last_id:
                st.added = added - len(after)
                if not st.buffer and st.committed == st.cursor:
                    st.added_at_committed = st.added

    # -- test hook ------------------------------------------------------------------------------------------------
    def _hook(self, point: FaultPoint) -> None:
        """Tests only (FORKCAST_COMPACT_FAULT): mark the file and stop dead here, for the test to SIGKILL us."""
        if self._fault is None or self._fault[0] != point:
            return
        self._fault[1].write_text(f"{os.getpid()} {point}\n")
        log.warning("fault hook: stopped at %s", point)
        while True:  # pragma: no cover - ends by SIGKILL
            time.sleep(60)
