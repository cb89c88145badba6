"""Unit: the AUC against a brute-force pair count, the interval, "not enough data", and the bounded ring."""

from __future__ import annotations

import numpy as np
from monitoring_support import brute_auc

from forkcast_monitoring.window import Window, hanley_mcneil, roc_auc


def test_auc_matches_pair_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 8, size=300).astype(np.float64)  # many ties
        labels = rng.random(300) < 0.3
        assert abs(roc_auc(scores, labels) - brute_auc(scores, labels)) < 1e-12


def test_interval_contains_the_estimate_and_narrows_with_data() -> None:
    lo1, hi1 = hanley_mcneil(0.75, 50, 200)
    lo2, hi2 = hanley_mcneil(0.75, 5000, 20000)
    assert lo1 < lo2 < 0.75 < hi2 < hi1
    assert hi2 - lo2 < 0.02


def test_no_auc_below_minimum_or_with_one_class() -> None:
    w = Window(window_s=100.0, max_samples=1000)
    for i in range(40):
        w.add(float(i), float(i), i % 2 == 0)
    assert w.estimate(min_samples=50, min_per_class=1).auc is None
    assert w.estimate(min_samples=10, min_per_class=1).auc is not None
    one_class = Window(window_s=100.0, max_samples=1000)
    for i in range(100):
        one_class.add(float(i), float(i), False)
    assert one_class.estimate(min_samples=10, min_per_class=1).auc is None


def test_ring_is_bounded_and_forgets_by_event_time() -> None:
    w = Window(window_s=10.0, max_samples=100)
    for i in range(1000):
        w.add(float(i), 0.0, True)
    assert w.size == 100
    assert w.times[w.start] == 900.0
    w.evict(now=995.0)
    assert w.size == 15  # times 985..999 are within 10 s of 995


def test_extend_keeps_what_the_same_adds_keep() -> None:
    """The job's batched ``extend`` against ``add`` pair by pair: wrap-around, eviction of the oldest, oversize."""
    rng = np.random.default_rng(3)
    for batches in ([3, 4], [5, 2, 6], [17], [1] * 9, [0, 7, 0, 3]):
        one, many = Window(100.0, 7), Window(100.0, 7)
        t = 0
        for n in batches:
            times = [float(t + k) for k in range(n)]
            scores = rng.random(n).tolist()
            labels = (rng.random(n) < 0.5).tolist()
            t += n
            for pair in zip(times, scores, labels, strict=True):
                one.add(*pair)
            many.extend(times, scores, labels)
            assert (many.start, many.size, many.newest) == (one.start, one.size, one.newest)
            assert [a.tolist() for a in many._view()] == [a.tolist() for a in one._view()]
            assert many.times.tolist() == one.times.tolist()
