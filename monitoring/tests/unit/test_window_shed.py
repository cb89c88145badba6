"""The window's per-key selection (``newest_per_key``) is the full sort's (``rank_from_newest``), pair for pair."""

from __future__ import annotations

import numpy as np

from forkcast_monitoring.window import newest_per_key, rank_from_newest


def test_newest_per_key_keeps_exactly_the_pairs_the_full_sort_keeps() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        n, n_keys = int(rng.integers(0, 2_000)), int(rng.integers(1, 10))
        keys = rng.integers(0, n_keys, n).astype(np.int32)
        times = rng.integers(0, max(1, n // int(rng.integers(1, 40))), n).astype(np.float64)  # shared times
        scores = rng.integers(0, 4, n).astype(np.float64)  # and ties in score and label within them
        labels = rng.random(n) < 0.3
        level = int(rng.integers(0, n // n_keys + 5))
        want = rank_from_newest(keys, times, scores, labels) < level
        assert np.array_equal(newest_per_key(keys, times, scores, labels, level), want)
