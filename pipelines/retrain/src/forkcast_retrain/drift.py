"""Data drift between two training sets: PSI per feature over the reference's decile bins, and label-rate shift.

Each published version carries the profile of its training data (``data_profile.json``: bin edges and
proportions per feature, click rate), so the gate compares new data against the champion's without the old
dataset. The profile is taken over the feature tables (each user and restaurant once), as the scaler is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from forkcast_contract.features import MODEL_INPUTS
from forkcast_retrain.prep import Prepared

BINS = 10
_EPS = 1e-4  # floor on a bin's share so an empty bin gives a large but finite PSI


def _feature_columns(prepared: Prepared) -> list[npt.NDArray[np.float32]]:
    k = prepared.users.shape[1]
    return [prepared.users[:, i] for i in range(k)] + [
        prepared.restaurants[:, i] for i in range(prepared.restaurants.shape[1])
    ]


def _shares(values: npt.NDArray[np.floating], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return np.maximum(counts / max(len(values), 1), _EPS)


def data_profile(prepared: Prepared, label_rate: float) -> dict[str, Any]:
    """Decile edges and bin shares of every model input, and the training click rate."""
    features = {}
    for name, column in zip(MODEL_INPUTS, _feature_columns(prepared), strict=True):
        edges = np.unique(np.quantile(column.astype(np.float64), np.linspace(0, 1, BINS + 1)[1:-1]))
        features[name] = {"edges": edges.tolist(), "shares": _shares(column, edges).tolist()}
    return {"bins": BINS, "label_rate": label_rate, "features": features}


def psi(reference: dict[str, Any], prepared: Prepared) -> dict[str, float]:
    """Population stability index of each feature of ``prepared`` against the reference profile."""
    out = {}
    for name, column in zip(MODEL_INPUTS, _feature_columns(prepared), strict=True):
        ref = reference["features"][name]
        expected = np.asarray(ref["shares"], dtype=np.float64)
        actual = _shares(column, np.asarray(ref["edges"], dtype=np.float64))
        out[name] = float(np.sum((actual - expected) * np.log(actual / expected)))
    return out
