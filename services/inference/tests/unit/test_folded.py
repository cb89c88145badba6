"""Unit tests of the folded model: it equals the unfolded float64 RankNet and refuses malformed weights."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_inference.folded import FoldedModel, ModelFormatError, sigmoid


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = {"w1": (256, 40), "b1": (256,), "w2": (128, 256), "b2": (128,), "w3": (1, 128), "b3": (1,)}
    return {k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in shapes.items()}


def _unfolded(w: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, x: np.ndarray) -> np.ndarray:
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    xs = (x - mean) / std
    h = xs @ w64["w1"].T + w64["b1"]
    h = np.maximum(h @ w64["w2"].T + w64["b2"], 0)
    out: np.ndarray = (h @ w64["w3"].T + w64["b3"])[:, 0]
    return out


def test_folded_equals_unfolded_forward() -> None:
    rng = np.random.default_rng(7)
    w = _weights(rng)
    mean, std = rng.normal(0, 1, 40), rng.uniform(0.5, 2, 40)
    model = FoldedModel.fold(w, mean, std)
    x = rng.normal(0, 1, (64, 40))
    want = _unfolded(w, mean, std, x)
    assert np.abs(model.logits_rows(x) - want).max() < 1e-9
    # The per-request split: one user against many restaurants.
    rows = np.hstack([np.repeat(x[:1, :30], 64, axis=0), x[:, 30:]])
    assert np.abs(model.logits(x[0, :30], x[:, 30:]) - _unfolded(w, mean, std, rows)).max() < 1e-9


def test_malformed_weights_are_refused() -> None:
    rng = np.random.default_rng(1)
    w = _weights(rng)
    mean, std = np.zeros(40), np.ones(40)
    with pytest.raises(ModelFormatError, match="w2"):
        FoldedModel.fold({**w, "w2": w["w2"][:, :10]}, mean, std)
    with pytest.raises(ModelFormatError, match="non-finite"):
        FoldedModel.fold({**w, "b1": np.full(256, np.nan, np.float32)}, mean, std)
    with pytest.raises(ModelFormatError, match="std"):
        FoldedModel.fold(w, mean, np.zeros(40))


def test_sigmoid_saturates_without_overflow() -> None:
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert out.tolist() == [0.0, 0.5, 1.0]
