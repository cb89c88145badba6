"""Joining prediction events with click feedback by (request id, restaurant id) within an attribution window.

Feedback may arrive before its prediction (the inference service flushes events in batches, the gateway writes at
once), so unmatched feedback waits too. Feedback joins only a prediction of the same API key (``key_id``): the
gateway refuses feedback on another key's request, and the job refuses it again (counted as ``key_mismatch``), so
that a bypass of the gateway cannot label other clients' traffic. Both buffers are bounded twice, by the
attribution window and by a count; whatever leaves them is counted by outcome, and its stream entry id is handed
back to be acknowledged: a prediction stays unacknowledged while it can still be joined, so a restarted job
re-reads it from its consumer group's pending list and late clicks still find it.
"""

from __future__ import annotations

from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass
from itertools import compress
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from forkcast_contract.streams import NO_KEY_ID
from forkcast_monitoring.events import Feedback, FeedbackBatch, Prediction


class Pair(NamedTuple):
    """One labelled prediction: what the window of its model version needs.

    A tuple (one per joined feedback entry) so that the job groups and transposes a batch of them in C
    (``itertools.groupby``, ``zip(*pairs)``) and a build costs 0.17 µs instead of a frozen dataclass' 0.39 µs.
    """

    model_version: str
    time: float
    score: float
    clicked: bool
    key_id: str = (
        NO_KEY_ID  # the API key of the request (and of its feedback): the window caps each key's share
    )


class _Pending:
    """A prediction waiting for clicks, compact: one is held per request for the whole attribution window.

    Why not the parsed ``Prediction`` (a dict of 10 boxed ids and scores) with a set of joined ids: that kept
    1,417 B per pending request (tracemalloc, test_join.py) and grew the bench's RSS by ≈ 2.4 KiB each, ≈ 1.2 GiB at
    the 500,000 cap; two typed arrays and a bitmask of joined positions keep 681 B. A response has at most a few
    hundred candidates, so ``array.index`` on it is cheap.
    """

    __slots__ = ("entry_id", "ids", "joined", "key_id", "model_version", "scores", "time")

    def __init__(self, prediction: Prediction, entry_id: bytes) -> None:
        self.model_version = prediction.model_version
        self.time = prediction.time
        self.ids = array("q", prediction.scores.keys())
        self.scores = array("d", prediction.scores.values())
        self.key_id = prediction.key_id
        self.entry_id = entry_id
        self.joined = 0  # bit i set: candidate i has been joined once


class JoinedBatch(NamedTuple):
    """The pairs a feedback batch joined, as columns in the batch's order: pair j labels a candidate of prediction
    ``pending[j]`` (an index into ``versions``/``key_ids``, one entry per prediction the batch referred to)."""

    versions: list[str]
    key_ids: list[str]
    pending: npt.NDArray[np.intp]
    times: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    clicked: npt.NDArray[np.bool_]


def _bits(mask: int, n: int) -> npt.NDArray[np.bool_]:
    """``mask``'s low ``n`` bits as booleans, bit i at i (a pending prediction's joined positions)."""
    if not mask:
        return np.zeros(n, dtype=np.bool_)
    raw = np.frombuffer(mask.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(np.bool_)


def _mask(bits: npt.NDArray[np.bool_]) -> int:
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


_NO_PENDING = _Pending(Prediction("", 0.0, "", {}), b"")  # stands in for a request not pending: no candidates


@dataclass(frozen=True)
class JoinConfig:
    attribution_s: float = 600.0
    max_skew_s: float = 30.0  # events stamped further in the future than this are refused (clock skew)
    max_pending: int = 500_000
    max_orphans: int = 100_000


class Joiner:
    """Not thread-safe: one consumer loop owns it."""

    def __init__(self, config: JoinConfig) -> None:
        self.config = config
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.orphans: OrderedDict[str, list[tuple[Feedback, bytes]]] = OrderedDict()
        self.orphan_count = 0
        self.counts: Counter[tuple[str, str]] = Counter()  # (stream, outcome) -> events
        self.to_ack: dict[str, list[bytes]] = {"predictions": [], "feedback": []}

    def _count(self, stream: str, outcome: str, n: int = 1) -> None:
        self.counts[(stream, outcome)] += n

    def _refused(self, stream: str, event_time: float, now: float) -> bool:
        if event_time > now + self.config.max_skew_s:
            self._count(stream, "future")
            return True
        return False

    def add_prediction(self, prediction: Prediction | None, entry_id: bytes, now: float) -> list[Pair]:
        if prediction is None:
            self._count("predictions", "malformed")
            self.to_ack["predictions"].append(entry_id)
            return []
        if self._refused("predictions", prediction.time, now):
            self.to_ack["predictions"].append(entry_id)
            return []
        if prediction.request_id in self.pending:
            self._count("predictions", "duplicate")
            self.to_ack["predictions"].append(entry_id)
            return []
        if len(self.pending) >= self.config.max_pending:
            _, evicted = self.pending.popitem(last=False)
            self._count("predictions", "evicted")
            self.to_ack["predictions"].append(evicted.entry_id)
        pending = self.pending[prediction.request_id] = _Pending(prediction, entry_id)
        self._count("predictions", "accepted")
        waiting = self.orphans.pop(prediction.request_id, [])
        self.orphan_count -= len(waiting)
        pairs = []
        for feedback, feedback_id in waiting:
            pair = self._match(pending, feedback)
            self.to_ack["feedback"].append(feedback_id)
            if pair is not None:
                pairs.append(pair)
        return pairs

    def add_feedback(self, feedback: Feedback | None, entry_id: bytes, now: float) -> Pair | None:
        # Hot path (10 calls per prediction): ``_refused`` and ``_count`` inlined, one lookup of the pending entry.
        if feedback is None:
            self.counts[("feedback", "malformed")] += 1
        elif feedback.time > now + self.config.max_skew_s:
            self.counts[("feedback", "future")] += 1
        else:
            pending = self.pending.get(feedback.request_id)
            if pending is not None:
                self.to_ack["feedback"].append(entry_id)
                return self._match(pending, feedback)
            self._park(feedback, entry_id)
            return None
        self.to_ack["feedback"].append(entry_id)
        return None

    def add_feedback_batch(self, batch: FeedbackBatch, now: float) -> JoinedBatch:
        """``add_feedback`` of every entry of ``batch`` in its order, with the same outcomes, counts, acks, orphans
        and joined pairs (monitoring/tests/unit/test_join_batch.py compares the two on random batches), in numpy.

        Why: at real answer sizes a prediction brings ≈ 43 feedback entries, and the job cost ≈ 9-11 µs per entry
        (monitoring/BENCHMARKS.md), most of it the per-entry decode and join (dict lookup, ``array.index``, bit test,
        a Pair). Here the only per-entry Python is the
        request-id lookup; the position of each restaurant in its prediction's response is one sort of the batch's
        (prediction, restaurant) keys. Exactness: the pending set does not change during a feedback batch (the job
        adds predictions before and expires after), and an entry is a duplicate exactly when its candidate was
        joined before the batch or by an earlier entry of the batch, which is the first entry for that candidate
        that passed the key and lateness checks.
        """
        n = len(batch.entry_ids)
        counts, acks = self.counts, self.to_ack["feedback"]
        future = batch.valid & (batch.times > now + self.config.max_skew_s)
        live = batch.valid & ~future
        counts[("feedback", "malformed")] += n - int(batch.valid.sum())
        counts[("feedback", "future")] += int(future.sum())
        live_at = np.flatnonzero(live)
        rids, key_ids = batch.request_ids, batch.key_ids
        get = self.pending.get
        preds = [get(rid) for rid in rids]  # one per distinct request id of the batch
        is_pending = np.fromiter((p is not None for p in preds), dtype=np.bool_, count=len(preds))
        loc = batch.request[live_at]
        found = is_pending[loc]
        parked = np.zeros(n, dtype=np.bool_)
        parked[live_at[~found]] = True
        for i in np.flatnonzero(parked).tolist():  # feedback before its prediction: waits, unacknowledged
            restaurant, click, time = (
                int(batch.restaurants[i]),
                bool(batch.clicked[i]),
                float(batch.times[i]),
            )
            feedback = Feedback(rids[batch.request[i]], restaurant, click, time, key_ids[batch.key[i]])
            self._park(feedback, batch.entry_ids[i])
        acks.extend(compress(batch.entry_ids, (~parked).tolist()))
        versions = [p.model_version if p is not None else "" for p in preds]
        pred_keys = [p.key_id if p is not None else "" for p in preds]
        empty = JoinedBatch(
            versions, pred_keys, np.zeros(0, np.intp), np.zeros(0), np.zeros(0), np.zeros(0, np.bool_)
        )
        at = live_at[found]  # entries whose prediction is pending, in batch order
        if not len(at):
            return empty
        at_loc = loc[found]
        # The candidates of the referred predictions, flat: prediction j's at starts[j] .. starts[j + 1].
        held = [p if p is not None else _NO_PENDING for p in preds]
        sizes = np.fromiter((len(p.ids) for p in held), dtype=np.intp, count=len(held))
        starts = np.r_[0, np.cumsum(sizes)]
        cand_ids = np.concatenate([np.frombuffer(p.ids, dtype=np.int64) for p in held])
        cand_scores = np.concatenate([np.frombuffer(p.scores, dtype=np.float64) for p in held])
        joined_before = np.concatenate([_bits(p.joined, len(p.ids)) for p in held])
        cand_owner = np.repeat(np.arange(len(held)), sizes)
        # Only predictions that served nothing (never decoded so, but a Prediction can be built so): no candidate.
        if not len(cand_ids):
            counts[("feedback", "unjoined")] += len(at)
            return empty
        # Position of (prediction, restaurant) among the candidates: both id lists ranked together, then one sorted
        # key per candidate (a response has each restaurant once) and a binary search per entry.
        _, rank = np.unique(np.concatenate([cand_ids, batch.restaurants[at]]), return_inverse=True)
        span = int(rank.max()) + 1
        cand_key = cand_owner * span + rank[: len(cand_ids)]
        want = at_loc * span + rank[len(cand_ids) :]
        order = np.argsort(cand_key)
        slot = np.minimum(np.searchsorted(cand_key[order], want), len(order) - 1)
        hit = cand_key[order][slot] == want
        flat = order[slot]  # the candidate each entry names (meaningful where ``hit``)
        # Key ids as the batch's codes (distinct bytes decode to distinct text); a prediction's key that no entry
        # carries gets -1, which no entry has.
        code_of = {key_id: code for code, key_id in enumerate(key_ids)}
        key_code = np.fromiter((code_of.get(k, -1) for k in pred_keys), np.intp, len(pred_keys))
        same_key = batch.key[at] == key_code[at_loc]
        pred_time = np.fromiter((p.time for p in held), dtype=np.float64, count=len(held))
        late = batch.times[at] > pred_time[at_loc] + self.config.attribution_s
        candidate = hit & same_key
        prior = joined_before[flat] & candidate
        passing = np.flatnonzero(candidate & ~prior & ~late)  # positions in ``at``, ascending
        first = np.full(len(cand_ids), len(at), dtype=np.intp)  # per candidate: the first passing entry
        uniq, first_at = np.unique(flat[passing], return_index=True)
        first[uniq] = passing[first_at]
        duplicate = candidate & (prior | (first[flat] < np.arange(len(at))))
        joins = candidate & ~duplicate & ~late
        counts[("feedback", "unjoined")] += int((~hit).sum())
        counts[("feedback", "key_mismatch")] += int((hit & ~same_key).sum())
        counts[("feedback", "duplicate")] += int(duplicate.sum())
        counts[("feedback", "late")] += int((candidate & ~duplicate & late).sum())
        j = np.flatnonzero(joins)
        clicked = batch.clicked[at[j]]
        counts[("feedback", "joined")] += len(j)
        counts[("feedback", "positive")] += int(clicked.sum())
        if len(j):
            now_joined = joined_before.copy()
            now_joined[flat[j]] = True
            for owner in np.unique(at_loc[j]).tolist():
                p = held[owner]
                p.joined = _mask(now_joined[starts[owner] : starts[owner + 1]])
        return JoinedBatch(
            versions, pred_keys, at_loc[j], pred_time[at_loc[j]], cand_scores[flat[j]], clicked
        )

    def _park(self, feedback: Feedback, entry_id: bytes) -> None:
        if self.orphan_count >= self.config.max_orphans:
            _, dropped = self.orphans.popitem(last=False)
            self.orphan_count -= len(dropped)
            self._count("feedback", "unjoined", len(dropped))
            self.to_ack["feedback"].extend(i for _, i in dropped)
        self.orphans.setdefault(feedback.request_id, []).append((feedback, entry_id))
        self.orphan_count += 1

    def _match(self, pending: _Pending, feedback: Feedback) -> Pair | None:
        counts = self.counts
        try:
            i = pending.ids.index(feedback.restaurant_id)
        except ValueError:
            counts[("feedback", "unjoined")] += 1  # a restaurant that response did not contain
            return None
        if feedback.key_id != pending.key_id:
            counts[("feedback", "key_mismatch")] += (
                1  # another key's label: refused, the candidate stays open
            )
            return None
        if pending.joined >> i & 1:
            counts[("feedback", "duplicate")] += 1
            return None
        if feedback.time > pending.time + self.config.attribution_s:
            counts[("feedback", "late")] += 1
            return None
        pending.joined |= 1 << i
        counts[("feedback", "joined")] += 1
        if feedback.clicked:
            counts[("feedback", "positive")] += 1
        return Pair(pending.model_version, pending.time, pending.scores[i], feedback.clicked, pending.key_id)

    def expire(self, now: float) -> None:
        """Let go of predictions and orphan feedback older than the attribution window (plus the allowed skew)."""
        horizon = now - self.config.attribution_s - self.config.max_skew_s
        while self.pending:
            rid, oldest = next(iter(self.pending.items()))
            if oldest.time >= horizon:
                break
            del self.pending[rid]
            self.to_ack["predictions"].append(oldest.entry_id)
            self._count("predictions", "expired")
        while self.orphans:
            rid, waiting = next(iter(self.orphans.items()))
            if max(f.time for f, _ in waiting) >= horizon:
                break
            del self.orphans[rid]
            self.orphan_count -= len(waiting)
            self._count("feedback", "unjoined", len(waiting))
            self.to_ack["feedback"].extend(i for _, i in waiting)

    def take_acks(self) -> dict[str, list[bytes]]:
        acks, self.to_ack = self.to_ack, {"predictions": [], "feedback": []}
        return acks
