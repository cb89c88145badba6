"""The metrics against their definitions, computed by brute force on small inputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from forkcast_retrain import metrics as m


def _brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_roc_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600).astype(np.float32)
    scores = np.round(rng.normal(size=600) + labels, 1).astype(np.float32)  # rounding makes many ties
    assert abs(m.roc_auc(scores, labels) - _brute_auc(scores, labels)) < 1e-12


def test_binned_auc_is_close_to_exact() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200_000).astype(np.float32)
    logits = (rng.normal(size=200_000) * 3 + (labels - 0.5) * 4).astype(np.float32)
    auc = m.BinnedAuc()
    for part in range(4):
        sl = slice(part * 50_000, (part + 1) * 50_000)
        auc.update(logits[sl], labels[sl])
    assert abs(auc.value() - m.roc_auc(logits, labels)) < 1e-3


def test_logloss_and_accuracy_match_torch() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 1000).astype(np.float32)
    logits = (rng.normal(size=1000) * 30).astype(np.float32)  # large logits: the stable form must hold
    expected = float(
        nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels))
    )
    assert abs(m.logloss(logits, labels) - expected) < 1e-5 * max(1.0, expected)
    assert m.accuracy(np.array([1.0, -1.0, 2.0]), np.array([1.0, 0.0, 0.0])) == 2 / 3


def test_calibration_error_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=400_000)
    labels = (rng.random(400_000) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    assert m.calibration_error(logits, labels) < 0.01
    assert m.calibration_error(logits + 3.0, labels) > 0.2
