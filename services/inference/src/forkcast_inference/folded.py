"""The RankNet folded for serving: standardisation and Linear∘Linear become one 128×40 matrix (SPEC §3).

With x_std = (x - mean) / std and no activation between the first two layers,
    W2 (W1 x_std + b1) + b2 = W x + c,  W = W2 W1 diag(1/std),  c = b2 + W2 b1 - W (mean)
and W splits into a user half (128×30) and a restaurant half (128×10): the user's part W_u u + c is computed once
per request and each candidate only costs a 10×128 product, a ReLU and a dot product with w3. Everything is float64:
a request's few dozen in-range rows make that free, and it keeps the folded logits within ~1e-12 of an unfolded
float64 forward, far inside the 1e-5 probe tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT
from forkcast_contract.model_format import RANKNET_HIDDEN1, RANKNET_HIDDEN2, RANKNET_INPUT_DIM

F64 = npt.NDArray[np.float64]
_SHAPES = {
    "w1": (RANKNET_HIDDEN1, RANKNET_INPUT_DIM),
    "b1": (RANKNET_HIDDEN1,),
    "w2": (RANKNET_HIDDEN2, RANKNET_HIDDEN1),
    "b2": (RANKNET_HIDDEN2,),
    "w3": (1, RANKNET_HIDDEN2),
    "b3": (1,),
}


class ModelFormatError(ValueError):
    """The serving weights or scaler do not have the RankNet's shapes or hold non-finite values."""


@dataclass(frozen=True)
class FoldedModel:
    """``logits(user, restaurants)`` of the RankNet, without torch."""

    w_user: F64  # (30, 128): transposed so that u @ w_user is a row vector
    w_rest: F64  # (10, 128)
    bias: F64  # (128,)
    w_out: F64  # (128,)
    b_out: float

    @classmethod
    def fold(cls, weights: dict[str, npt.NDArray[np.floating]], mean: F64, std: F64) -> FoldedModel:
        for name, shape in _SHAPES.items():
            if name not in weights or weights[name].shape != shape:
                got = weights[name].shape if name in weights else "missing"
                raise ModelFormatError(f"serving weight {name}: expected shape {shape}, got {got}")
            if not np.isfinite(weights[name]).all():
                raise ModelFormatError(f"serving weight {name} holds non-finite values")
        if mean.shape != (RANKNET_INPUT_DIM,) or std.shape != (RANKNET_INPUT_DIM,) or not (std > 0).all():
            raise ModelFormatError(f"scaler: mean and std must be {RANKNET_INPUT_DIM} values each, std > 0")
        w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        folded = (w["w2"] @ w["w1"]) / std  # (128, 40); column j scaled by 1/std_j
        bias = w["b2"] + w["w2"] @ w["b1"] - folded @ mean
        return cls(
            w_user=np.ascontiguousarray(folded[:, :USER_FEATURE_COUNT].T),
            w_rest=np.ascontiguousarray(folded[:, USER_FEATURE_COUNT:].T),
            bias=bias,
            w_out=np.ascontiguousarray(w["w3"][0]),
            b_out=float(w["b3"][0]),
        )

    def logits(self, user: npt.NDArray[np.floating], restaurants: npt.NDArray[np.floating]) -> F64:
        """Logits of one user against k restaurants ((30,) and (k, 10) raw features) in one matrix product."""
        hidden = restaurants @ self.w_rest
        hidden += user @ self.w_user + self.bias
        np.maximum(hidden, 0.0, out=hidden)
        out: F64 = hidden @ self.w_out + self.b_out
        return out

    def logits_rows(self, rows: npt.NDArray[np.floating]) -> F64:
        """Logits of (n, 40) raw rows, each with its own user half (the probe set)."""
        hidden = rows[:, :USER_FEATURE_COUNT] @ self.w_user + rows[:, USER_FEATURE_COUNT:] @ self.w_rest
        hidden += self.bias
        np.maximum(hidden, 0.0, out=hidden)
        out: F64 = hidden @ self.w_out + self.b_out
        return out


def sigmoid(logits: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * logits))  # no overflow warning for large |logit|, unlike 1/(1+e^-x)
    return out


assert RESTAURANT_FEATURE_COUNT + USER_FEATURE_COUNT == RANKNET_INPUT_DIM
