"""Click files, one at a time, turned into (features, labels) with the features gathered by index.

Only one click file (625 k rows: 15 MB of ids, 100 MB of gathered float32 features) is in memory at a time, so
the peak memory is the two feature tables plus one file, whatever the number of files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from forkcast_contract.dataset import CLICK_COLUMNS
from forkcast_contract.features import USER_FEATURE_COUNT
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import Prepared
from forkcast_retrain.tables import read_checked


class FeatureGatherer:
    """Holds the (optionally standardised) feature tables as tensors and builds model inputs for a click file.

    Standardising the tables once (1.1 M rows) instead of every gathered row (50 M per epoch) gives the same
    inputs: (x - mean) / std is per feature, so it commutes with the gather.
    """

    def __init__(
        self, prepared: Prepared, mean: npt.NDArray[np.float32], std: npt.NDArray[np.float32]
    ) -> None:
        k = USER_FEATURE_COUNT
        self.users = torch.from_numpy((prepared.users - mean[:k]) / std[:k]).contiguous()
        self.restaurants = torch.from_numpy((prepared.restaurants - mean[k:]) / std[k:]).contiguous()
        self.prepared = prepared

    def load(self, path: Path, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (n x 40 float32) and labels (n float32 0/1) of one click file, shuffled when ``rng`` is given."""
        frame = read_checked(path, CLICK_COLUMNS)
        users = frame["user_id"].to_numpy(writable=True)
        rests = frame["restaurant_id"].to_numpy(writable=True)
        clicks = frame["click"].to_numpy(writable=True)
        if not np.isin(clicks, (0, 1)).all():
            raise DataError(f"{path}: click must be 0 or 1")
        if rng is not None:
            # Shuffling the three int columns is cheaper than shuffling the gathered 40-wide rows.
            perm = rng.permutation(len(users))
            users, rests, clicks = users[perm], rests[perm], clicks[perm]
        u_rows = torch.from_numpy(self.prepared.user_index.rows(users, str(path)))
        r_rows = torch.from_numpy(self.prepared.restaurant_index.rows(rests, str(path)))
        # torch.index_select is ~1.7x faster than numpy fancy indexing for this gather (31 ms vs 53 ms for
        # 625 k rows of 30 floats on the 2-core VM), and torch.cat writes the 40-wide rows in one pass.
        x = torch.cat([self.users.index_select(0, u_rows), self.restaurants.index_select(0, r_rows)], dim=1)
        return x, torch.from_numpy(clicks.astype(np.float32))
