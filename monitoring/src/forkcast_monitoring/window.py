"""Sliding event-time windows of labelled predictions per model version, and their ROC-AUC with an interval.

A window keeps at most ``max_samples`` pairs (preallocated arrays, so memory is fixed whatever the rate) and forgets
every pair whose prediction is older than ``window_s`` by its own event time: pairs arrive in join order, not in
prediction order (a click may come minutes after the predictions of later requests have joined), so eviction
never assumes the arrays are sorted by time.

Which pairs an estimate uses (``kept``): those in the window (prediction time at or after the horizon), then at most
``max_key_share`` of them from any one API key (issue 18.1: one client must not steer the online AUC that gates
releases). The rule is a function of the pairs alone, so an offline recompute over the same pairs gives the same
AUC to rounding: with n_k pairs of key k, every key keeps min(n_k, c) pairs, c the largest integer such that
min(max n_k, c) <= max_key_share * sum_k min(n_k, c); a key above c keeps its c newest pairs, newest by
(prediction time, score, label) descending (pairs equal in all three are interchangeable for the AUC). A single key
therefore yields no AUC unless max_key_share is 1.

Below ``min_samples`` kept pairs, or without both classes, a window has no AUC at all: an exported 0.5 would let a
canary analysis pass or fail by chance, where no value makes it Inconclusive.

The share bounds how many pairs one key contributes, not how far it moves the AUC: responses show each restaurant's
score, so a key at exactly its share that clicks the lowest-scored half moved a 0.757 AUC to 0.407 (the attacker
review of issue 18.1). So an estimate can also carry the range of the AUC with each single key's kept pairs left
out (``leave_one_key_out``): one key moves at most one end of that range, and the canary analysis decides only
when both ends agree (rollouts/analysis-templates.yaml inference-online-auc), so one key can pause a canary, never
decide it. Several colluding keys are not covered: together they hold up to their number times the share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forkcast_contract.metrics_math import roc_auc

F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]
I32 = npt.NDArray[np.int32]


def hanley_mcneil(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """Normal-approximation interval of an AUC (Hanley & McNeil 1982): analytic, so free at every export."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def key_cap(counts: npt.NDArray[np.integer], max_share: float) -> int | None:
    """The most pairs any one key keeps (None: no key is above ``max_share``, nothing is left out).

    h(c) = max_share * sum_k min(n_k, c) - c is concave with h(0) = 0, so the c with h(c) >= 0 form an interval
    [0, c*]: a binary search finds c*, O(keys * log(max n_k)).
    """
    top = int(counts.max(initial=0))
    if max_share >= 1.0 or top <= max_share * int(counts.sum()):
        return None
    lo, hi = 0, top  # h(lo) >= 0 holds, h(hi) < 0 (the test above)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid <= max_share * int(np.minimum(counts, mid).sum()):
            lo = mid
        else:
            hi = mid
    return lo


def _half_wins(labels: BOOL, boundary: BOOL) -> tuple[F64, F64]:
    """For pairs in ascending score order, runs of tied scores starting where ``boundary`` is True: per positive,
    the negatives below it plus half those tied with it (its part of the Mann-Whitney U); per negative, the
    positives above it plus half those tied with it. Half-integers: their sums are exact in float64 below 2**52.
    """
    n = len(labels)
    starts = np.flatnonzero(boundary)
    bounds = np.r_[starts, n]
    negs = np.r_[0, np.cumsum(~labels)][bounds]  # negatives before each run's start (and before the end)
    neg_before, neg_in = negs[:-1], np.diff(negs)
    pos_in = np.diff(bounds) - neg_in
    pos_after = (n - negs[-1]) - np.cumsum(pos_in)
    run = np.cumsum(boundary) - 1  # each position's run
    wins = (neg_before + 0.5 * neg_in)[run[labels]]
    losses = (pos_after + 0.5 * pos_in)[run[~labels]]
    return wins, losses


def leave_one_key_out(
    scores: F64, labels: BOOL, keys: I32, min_samples: int, min_per_class: int
) -> tuple[float, float] | None:
    """(lowest, highest) AUC of the pairs with one key's pairs left out, over every key present; None when one key
    only is present (leaving it out leaves nothing) or when leaving out some key leaves fewer than ``min_samples``
    pairs or ``min_per_class`` of a class (that key alone carries the window over its minimum: no range is honest).

    Exact, without K recomputes: U (pairs positive-above-negative, ties one half) of the pairs without key k is
    U - A_k - B_k + C_k, where A_k sums the wins of k's positives over every negative, B_k the losses of k's
    negatives to every positive, and C_k is k's own U (the pairs inside k, counted in both A_k and B_k). One sort by
    score gives A and B; one stable sort of that order by key gives C. All terms are half-integers, so the result
    equals a recompute over the remaining pairs to the rounding of the last division
    (monitoring/tests/integration/test_loko.py).
    Measured (timeit, best of 5, 200,000 pairs: the window's default capacity; 10 % positives; this 2-core
    machine): ≈ 34,000 µs with K = 8 and ≈ 38,000 µs with K = 100, against ≈ 210,000 µs and ≈ 2,900,000 µs for K
    plain recomputes (roc_auc over each remainder; one roc_auc is ≈ 29,000 µs). The score sort dominates; K only
    lengthens the bincounts.
    """
    n = len(scores)
    counts = np.bincount(keys) if n else np.zeros(0, dtype=np.intp)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        return None
    n_keys = len(counts)
    positives = np.bincount(keys[labels], minlength=n_keys)
    n_pos = int(positives.sum())
    rest_pos = n_pos - positives[present]
    rest_neg = (n - n_pos) - (counts[present] - positives[present])
    too_few = (rest_pos + rest_neg).min() < min_samples
    if too_few or min(rest_pos.min(), rest_neg.min()) < max(min_per_class, 1):
        return None
    order = np.argsort(scores)  # any order of tied scores will do: ties are counted by run
    s_scores, s_labels, s_keys = scores[order], labels[order], keys[order]
    wins, losses = _half_wins(s_labels, np.r_[True, s_scores[1:] != s_scores[:-1]])
    u_total = float(wins.sum())
    by_pos = np.bincount(s_keys[s_labels], weights=wins, minlength=n_keys)
    by_neg = np.bincount(s_keys[~s_labels], weights=losses, minlength=n_keys)
    # The same pairs by key, then score (a stable sort keeps the score order inside each key; numpy's stable sort
    # is a radix sort for 16-bit ints: 1.7 ms against 4.7 ms for 200,000 int32 codes here). Runs of ties then never
    # span two keys, so the wins of a key's positives over the negatives before them inside its block are its U.
    by_key = np.argsort(s_keys.astype(np.int16) if n_keys <= 2**15 else s_keys, kind="stable")
    k_scores, k_labels, k_keys = s_scores[by_key], s_labels[by_key], s_keys[by_key]
    boundary = np.r_[True, (k_keys[1:] != k_keys[:-1]) | (k_scores[1:] != k_scores[:-1])]
    block_wins, _ = _half_wins(k_labels, boundary)  # over the negatives of every block before, too
    block_start = np.r_[0, np.cumsum(counts)[:-1]]
    negs_before_block = block_start - np.r_[0, np.cumsum(positives)[:-1]]
    pos_keys = k_keys[k_labels]
    inside = np.bincount(pos_keys, weights=block_wins - negs_before_block[pos_keys], minlength=n_keys)
    u_rest = u_total - by_pos[present] - by_neg[present] + inside[present]
    aucs = u_rest / (rest_pos * rest_neg)
    return float(aucs.min()), float(aucs.max())


def rank_from_newest(keys: I32, times: F64, scores: F64, labels: BOOL) -> npt.NDArray[np.intp]:
    """Per pair, how many pairs of the same key are newer by (time, score, label): 0 for each key's newest."""
    order = np.lexsort((labels, scores, times, keys))  # by key, then oldest first
    sorted_keys = keys[order]
    group_end = np.searchsorted(sorted_keys, sorted_keys, side="right")
    ranks = np.empty(len(keys), dtype=np.intp)
    ranks[order] = group_end - 1 - np.arange(len(keys))
    return ranks


def newest_per_key(keys: I32, times: F64, scores: F64, labels: BOOL, level: int) -> BOOL:
    """``rank_from_newest(keys, times, scores, labels) < level``, the same mask, without sorting every pair.

    Each key above ``level`` drops its ``n_k - level`` oldest by (time, score, label, position), as the full sort
    orders them: a partition finds the time of the last pair dropped, every older pair goes, and only the pairs at
    exactly that time (one prediction's pairs share its time: tens) are sorted. Why: the window sheds 5 % of its
    capacity at a time, and with 43 pairs per prediction it sheds constantly; the four-key ``lexsort`` of 210,000
    pairs behind each shed was 152 µs of the job's 373 µs per prediction (process_time per stage, 20,000
    predictions, 2026-12-05).
    """
    n = len(keys)
    keep = np.ones(n, dtype=np.bool_)
    counts = np.bincount(keys) if n else np.zeros(0, dtype=np.intp)
    over = np.flatnonzero(counts > level)
    if not len(over):
        return keep
    # Positions grouped by key, ascending within each (numpy's stable sort is a radix sort for 16-bit ints).
    by_key = np.argsort(keys.astype(np.int16) if len(counts) <= 2**15 else keys, kind="stable")
    starts = np.r_[0, np.cumsum(counts)]
    for key in over.tolist():
        at = by_key[starts[key] : starts[key + 1]]
        drop = int(counts[key]) - level
        t = times[at]
        last = np.partition(t, drop - 1)[drop - 1]  # the time of the newest pair dropped
        older = t < last
        keep[at[older]] = False
        tied = at[t == last]  # ascending positions: the full sort's order among equal (time, score, label)
        order = np.lexsort((tied, labels[tied], scores[tied]))
        keep[tied[order[: drop - int(older.sum())]]] = False
    return keep


@dataclass(frozen=True)
class Estimate:
    samples: int  # pairs the AUC is computed on (in the window, within the per-key share)
    positives: int
    auc: float | None  # None: not enough data
    lower: float | None
    upper: float | None
    excluded: int = 0  # pairs in the window left out because their key held more than its share
    # Lowest and highest AUC with one key's pairs left out (``leave_one_key_out``); None unless asked for, and
    # when a single key is present or leaving one out drops the rest below the minimum counts.
    loko_min: float | None = None
    loko_max: float | None = None


class Window:
    """Pairs of one model version, in arrival order, at most ``max_samples`` of them after every ``extend``.

    The arrays hold half as much again: a batch is appended first and the window then shed back under
    ``max_samples`` looking at all its pairs, the new ones included, so that the flood in a batch pays for itself.
    """

    def __init__(self, window_s: float, max_samples: int, max_key_share: float = 1.0) -> None:
        self.window_s, self.max_key_share = window_s, max_key_share
        self.capacity = max_samples
        self.chunk = max(1, max_samples // 2)  # the most pairs appended before a shed
        room = max_samples + self.chunk
        self.times = np.zeros(room, dtype=np.float64)
        self.scores = np.zeros(room, dtype=np.float64)
        self.labels = np.zeros(room, dtype=np.bool_)
        self.keys = np.zeros(room, dtype=np.int32)  # the job's code of each pair's API key id
        self.size = 0
        self.shed = 0  # pairs dropped because the window was full (see ``_shed``)

    def add(self, time: float, score: float, clicked: bool, key: int = 0) -> None:
        self.extend([time], [score], [clicked], [key])

    def extend(
        self,
        times: Sequence[float] | npt.NDArray[np.float64],
        scores: Sequence[float] | npt.NDArray[np.float64],
        labels: Sequence[bool] | npt.NDArray[np.bool_],
        keys: Sequence[int] | npt.NDArray[np.int32] | None = None,
    ) -> None:
        """Append a batch (the job hands over a whole step's pairs at once: four slice assignments)."""
        total = len(times)
        key_list: Sequence[int] | npt.NDArray[np.int32] = [0] * total if keys is None else keys
        for start in range(0, total, self.chunk):  # a batch above the headroom goes in pieces
            end = min(total, start + self.chunk)
            i, n = self.size, end - start
            self.times[i : i + n] = times[start:end]
            self.scores[i : i + n] = scores[start:end]
            self.labels[i : i + n] = labels[start:end]
            self.keys[i : i + n] = key_list[start:end]
            self.size += n
            if self.size > self.capacity:
                self._shed(self.size - self.capacity + self.capacity // 20)

    def _shed(self, count: int) -> None:
        """Drop at least ``count`` pairs (and at most ``count`` + keys - 1): the oldest pairs of the keys holding
        the most, down to one common level, so that a flood from one key pushes out its own pairs and not the other
        keys'. 5 % of the capacity is shed at a time so that the sort runs once per that many pairs (≈ 20 ms for
        200,000 pairs), not once per step.
        """
        n = self.size
        count = min(count, n)
        if count <= 0:
            return
        keys = self.keys[:n]
        counts = np.bincount(keys)
        lo, hi = 0, int(counts.max()) + 1  # the highest level L whose excess sum(max(n_k - L, 0)) >= count
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if int(np.maximum(counts - mid, 0).sum()) >= count:
                lo = mid
            else:
                hi = mid
        keep = newest_per_key(keys, self.times[:n], self.scores[:n], self.labels[:n], lo)
        self.shed += n - int(keep.sum())
        self._compact(keep)

    def _compact(self, keep: BOOL) -> None:
        idx = np.flatnonzero(keep)
        k = len(idx)
        for arr in (self.times, self.scores, self.labels, self.keys):
            arr[:k] = arr[idx]
        self.size = k

    def evict(self, now: float) -> None:
        """Forget every pair whose prediction is older than the window, wherever it sits in the arrays."""
        keep = self.times[: self.size] >= now - self.window_s
        if not keep.all():
            self._compact(keep)

    def kept(self, since: float | None = None) -> tuple[F64, BOOL, I32, int]:
        """Scores, labels and key codes of the pairs an estimate uses, and how many the per-key share left out.

        ``since``: only pairs whose prediction is at that time or later (the recent window); the share is applied
        to that window's own pairs.
        """
        n = self.size
        times, scores, labels, keys = self.times[:n], self.scores[:n], self.labels[:n], self.keys[:n]
        if since is not None:
            inside = times >= since
            times, scores, labels, keys = times[inside], scores[inside], labels[inside], keys[inside]
        cap = key_cap(np.bincount(keys), self.max_key_share) if len(keys) else None
        if cap is None:
            return scores, labels, keys, 0
        keep = newest_per_key(keys, times, scores, labels, cap)
        return scores[keep], labels[keep], keys[keep], len(keep) - int(keep.sum())

    def estimate(
        self, min_samples: int, min_per_class: int, since: float | None = None, key_range: bool = False
    ) -> Estimate:
        """The AUC of the kept pairs of the window, or of those whose prediction is at ``since`` or later only.

        ``since`` gives versions a common window: the canary analysis compares a canary that has served for minutes
        with a stable version that has served all day, so both are measured over the same recent minutes.
        ``key_range``: also the leave-one-key-out range (``loko_min``/``loko_max``), which the canary analysis reads.
        """
        scores, labels, keys, excluded = self.kept(since)
        size = len(scores)
        positives = int(labels.sum())
        negatives = size - positives
        if size < min_samples or min(positives, negatives) < max(min_per_class, 1):
            return Estimate(size, positives, None, None, None, excluded)
        auc = roc_auc(scores, labels)
        lower, upper = hanley_mcneil(auc, positives, negatives)
        spread = leave_one_key_out(scores, labels, keys, min_samples, min_per_class) if key_range else None
        low, high = spread if spread is not None else (None, None)
        return Estimate(size, positives, auc, lower, upper, excluded, low, high)
