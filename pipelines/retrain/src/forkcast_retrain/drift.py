"""Data drift between two training sets: PSI per feature over the reference's decile bins.

Each published version carries the profile of its training data (``data_profile.json``: bin edges and
proportions per feature, click rate), so the gate compares new data against the champion's without the old
dataset. The profile is taken over the feature tables (each user and restaurant once), as the scaler is. The PSI
and the profile format live in ``forkcast_contract.drift``, shared with monitoring's drift job: one PSI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from forkcast_contract import drift
from forkcast_contract.features import MODEL_INPUTS
from forkcast_retrain.prep import Prepared

BINS = drift.BINS


def _feature_columns(prepared: Prepared) -> dict[str, npt.NDArray[np.float32]]:
    columns = [prepared.users[:, i] for i in range(prepared.users.shape[1])] + [
        prepared.restaurants[:, i] for i in range(prepared.restaurants.shape[1])
    ]
    return dict(zip(MODEL_INPUTS, columns, strict=True))


def data_profile(prepared: Prepared, label_rate: float) -> dict[str, Any]:
    """Decile edges and bin shares of every model input, and the training click rate."""
    return drift.make_profile(_feature_columns(prepared), label_rate)


def psi(reference: dict[str, Any], prepared: Prepared) -> dict[str, float]:
    """Population stability index of each feature of ``prepared`` against the reference profile."""
    return drift.psi_per_feature(reference, _feature_columns(prepared))
