"""Sliding event-time windows of labelled predictions per model version, and their ROC-AUC with an interval.

A window keeps at most ``max_samples`` pairs (a ring buffer of preallocated arrays, so memory is fixed whatever the
rate) and forgets pairs whose prediction is older than ``window_s``. Below ``min_samples`` pairs, or without both
classes, a window has no AUC at all: an exported 0.5 would let a canary analysis pass or fail by chance, where no
value makes it Inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forkcast_contract.metrics_math import roc_auc

F64 = npt.NDArray[np.float64]


def hanley_mcneil(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """Normal-approximation interval of an AUC (Hanley & McNeil 1982): analytic, so free at every export."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


@dataclass(frozen=True)
class Estimate:
    samples: int
    positives: int
    auc: float | None  # None: not enough data
    lower: float | None
    upper: float | None


class Window:
    """Pairs of one model version, oldest first, in a fixed-size ring."""

    def __init__(self, window_s: float, max_samples: int) -> None:
        self.window_s = window_s
        self.times = np.zeros(max_samples, dtype=np.float64)
        self.scores = np.zeros(max_samples, dtype=np.float64)
        self.labels = np.zeros(max_samples, dtype=np.bool_)
        self.start = 0  # index of the oldest pair
        self.size = 0
        self.newest = 0.0

    @property
    def capacity(self) -> int:
        return len(self.times)

    def add(self, time: float, score: float, clicked: bool) -> None:
        if self.size == self.capacity:  # full: the oldest pair makes room
            self.start = (self.start + 1) % self.capacity
            self.size -= 1
        i = (self.start + self.size) % self.capacity
        self.times[i], self.scores[i], self.labels[i] = time, score, clicked
        self.size += 1
        self.newest = max(self.newest, time)

    def extend(self, times: Sequence[float], scores: Sequence[float], labels: Sequence[bool]) -> None:
        """``add`` of each pair in turn, as three slice assignments: the job hands over a whole batch at once
        (per-pair ``add`` was 1.4 µs of numpy scalar stores per feedback entry, profiled on the benchmark)."""
        total = len(times)
        if total == 0:
            return
        self.newest = max(self.newest, max(times))
        cap = self.capacity
        skip = max(0, total - cap)  # pairs the later ones of this batch would overwrite
        i = (self.start + self.size + skip) % cap  # where the first kept pair goes
        if skip:
            times, scores, labels = times[skip:], scores[skip:], labels[skip:]
        n = total - skip
        first = min(n, cap - i)  # up to the end of the ring, the rest wraps to its beginning
        self.times[i : i + first] = times[:first]
        self.scores[i : i + first] = scores[:first]
        self.labels[i : i + first] = labels[:first]
        if first < n:
            self.times[: n - first] = times[first:]
            self.scores[: n - first] = scores[first:]
            self.labels[: n - first] = labels[first:]
        overflow = self.size + total - cap
        if overflow > 0:  # full: the oldest pairs made room
            self.start = (self.start + overflow) % cap
            self.size = cap
        else:
            self.size += total

    def evict(self, now: float) -> None:
        """Forget pairs whose prediction is older than the window (event time against ``now``)."""
        horizon = now - self.window_s
        while self.size and self.times[self.start] < horizon:
            self.start = (self.start + 1) % self.capacity
            self.size -= 1

    def _view(self, since: float | None = None) -> tuple[F64, npt.NDArray[np.bool_]]:
        idx = (self.start + np.arange(self.size)) % self.capacity
        if since is not None:  # by event time, not position: late pairs may sit after newer ones in the ring
            idx = idx[self.times[idx] >= since]
        return self.scores[idx], self.labels[idx]

    def estimate(self, min_samples: int, min_per_class: int, since: float | None = None) -> Estimate:
        """The AUC of the pairs in the window, or of those whose prediction is at ``since`` or later only.

        ``since`` gives versions a common window: the canary analysis compares a canary that has served for minutes
        with a stable version that has served all day, so both are measured over the same recent minutes.
        """
        scores, labels = self._view(since)
        size = len(scores)
        positives = int(labels.sum())
        negatives = size - positives
        if size < min_samples or positives < min_per_class or negatives < min_per_class:
            return Estimate(size, positives, None, None, None)
        auc = roc_auc(scores, labels)
        lower, upper = hanley_mcneil(auc, positives, negatives)
        return Estimate(size, positives, auc, lower, upper)
