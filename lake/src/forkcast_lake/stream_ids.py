"""Redis stream entry ids (``<ms>-<seq>``) as the int64 a Delta ``txn`` action's version holds, and back.

A Delta transaction identifier is ``(appId, version: long)`` (Delta protocol, "Transaction Identifiers",
delta-io/delta PROTOCOL.md); the compaction stores the last stream entry id it committed there. The id is packed as
``ms * 2**20 + seq``: ordering is kept (a later entry has a larger number), ms has 43 bits (until the year 2248) and
seq 20 bits — Redis numbers the entries added within one millisecond 0, 1, 2…, so a seq of 2**20 would take more
than a million XADDs in one millisecond; an id past either bound is refused, never wrapped.
"""

from __future__ import annotations

from typing import Final, NamedTuple

SEQ_BITS: Final = 20
_SEQ_LIMIT: Final = 1 << SEQ_BITS
_MS_LIMIT: Final = 1 << (63 - SEQ_BITS)


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str) -> StreamId:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def next(self) -> StreamId:
        """The smallest id after this one (what ``XTRIM MINID`` must be given to drop this entry too)."""
        return StreamId(self.ms, self.seq + 1)

    def to_version(self) -> int:
        """The int64 a Delta txn version holds; ValueError for an id outside the packed range."""
        if not (0 <= self.ms < _MS_LIMIT and 0 <= self.seq < _SEQ_LIMIT):
            raise ValueError(f"stream id {self} does not fit a Delta txn version (ms < 2**43, seq < 2**20)")
        return (self.ms << SEQ_BITS) | self.seq

    @classmethod
    def from_version(cls, version: int) -> StreamId:
        if version < 0:
            raise ValueError(f"negative txn version {version}")
        return cls(version >> SEQ_BITS, version & (_SEQ_LIMIT - 1))


ZERO: Final = StreamId(0, 0)
