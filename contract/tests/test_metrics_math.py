"""The shared ROC-AUC against a brute-force pair count, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_contract.metrics_math import roc_auc


def test_roc_auc_matches_pair_count_with_ties() -> None:
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        positive = rng.random(400) < 0.4
        scores = rng.integers(0, 10, size=400).astype(dtype)  # many ties
        pos, neg = scores[positive], scores[~positive]
        diff = pos[:, None] - neg[None, :]
        brute = float(((diff > 0) + 0.5 * (diff == 0)).mean())
        assert abs(roc_auc(scores, positive) - brute) < 1e-12


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        roc_auc(np.arange(5.0), np.ones(5, dtype=bool))
