"""Population stability index and the training-data profile it is measured against (``data_profile.json``).

One implementation for both users of it: the retraining gate (new training data vs the champion's profile) and
monitoring's drift job (served features and scores vs the profile of the version in service). The profile keeps,
per model input, the reference's decile edges and the share of rows in each bin, so that drift can be measured
later without the old dataset. numpy only: the drift job's image must not pull in the training stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

BINS: Final = 10
# Floor on a bin's share, so that an empty bin gives a large but finite PSI.
EPS: Final = 1e-4
# Conventional PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant shift.
PSI_SIGNIFICANT: Final = 0.25

F64 = npt.NDArray[np.float64]


def edges_of(values: npt.NDArray[np.floating], bins: int = BINS) -> F64:
    """Inner quantile edges of ``values`` (``bins`` - 1 of them, ties merged)."""
    inner = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(np.quantile(values.astype(np.float64), inner))


def shares(values: npt.NDArray[np.floating], edges: F64) -> F64:
    """Share of ``values`` in each bin the edges make (len(edges) + 1 bins), floored at EPS."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return np.maximum(counts / max(len(values), 1), EPS)


def psi(expected: Sequence[float] | F64, actual: Sequence[float] | F64) -> float:
    """PSI between two share vectors over the same bins: sum((a - e) * ln(a / e))."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def histogram(values: npt.NDArray[np.floating], bins: int = BINS) -> dict[str, list[float]]:
    """The profile entry of one column: its decile edges and the shares of its own values in them."""
    edges = edges_of(values, bins)
    return {"edges": edges.tolist(), "shares": shares(values, edges).tolist()}


def psi_against(entry: Mapping[str, Any], values: npt.NDArray[np.floating]) -> float:
    """PSI of ``values`` against one profile entry (``{"edges": …, "shares": …}``)."""
    edges = np.asarray(entry["edges"], dtype=np.float64)
    return psi(entry["shares"], shares(values, edges))


def served_scores(logits: npt.NDArray[np.floating]) -> F64:
    """The scores a client is served for these logits: sigmoid(logit) (SPEC §6), in the inference service's form.

    Why here: ``probe.npz`` holds logits (``registry_format``: the service checks its own forward against them,
    where a probability would hide differences in its saturated tails), while prediction events carry the served
    probabilities. The drift job profiles the probe in the served space through this function; comparing the two
    spaces directly read a score PSI of about 8 with no drift at all (monitoring/tests/integration/test_drift.py).
    ``0.5 * (1 + tanh(x / 2))`` equals 1 / (1 + e^-x) without overflow for large |x|.
    """
    x = np.asarray(logits, dtype=np.float64)
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


def make_profile(
    columns: Mapping[str, npt.NDArray[np.floating]], label_rate: float, bins: int = BINS
) -> dict[str, Any]:
    """``data_profile.json``: ``{"bins", "label_rate", "features": {name: {"edges", "shares"}}}``."""
    return {
        "bins": bins,
        "label_rate": label_rate,
        "features": {name: histogram(col, bins) for name, col in columns.items()},
    }


def psi_per_feature(
    profile: Mapping[str, Any], columns: Mapping[str, npt.NDArray[np.floating]]
) -> dict[str, float]:
    """PSI of each column against the profile's entry of the same name (every column must be in the profile)."""
    features = profile["features"]
    return {name: psi_against(features[name], col) for name, col in columns.items()}
