"""Distance filters for a request's candidates: plain haversine, a bounding-box pre-filter, an H3 pre-filter.

All return the indices of candidates with displacement ≤ max_dist metres. `featurestore/benchmarks/bench_features.py
fetch` measures them on the real workload (BENCHMARKS.md); the winner is the bounding box then haversine.
"""

from __future__ import annotations

import math

import h3
import numpy as np
import numpy.typing as npt

# Pure distance code lives in the contract so that the inference service shares it without this package.
from forkcast_contract.geo import EARTH_RADIUS_M, F64, haversine_m, within_bbox, within_haversine

__all__ = [
    "EARTH_RADIUS_M",
    "h3_cells",
    "h3_resolution",
    "haversine_m",
    "within_bbox",
    "within_h3",
    "within_haversine",
]

I64 = npt.NDArray[np.int64]


def h3_resolution(max_dist: float) -> int:
    """The finest resolution whose cells are still wider than a tenth of max_dist (keeps the disk small)."""
    for res in range(15, -1, -1):
        if h3.average_hexagon_edge_length(res, unit="m") * 10 >= max_dist:
            return res
    return 0


def h3_cells(lats: F64, lngs: F64, res: int) -> I64:
    """Each point's cell as an int64 (stored per restaurant, computed once per feature version)."""
    return np.array(
        [h3.str_to_int(h3.latlng_to_cell(a, b, res)) for a, b in zip(lats, lngs, strict=True)], dtype=np.int64
    )


def within_h3(lat: float, lng: float, lats: F64, lngs: F64, cells: I64, res: int, max_dist: float) -> I64:
    """Candidates whose cell lies in the grid disk covering max_dist, then exact haversine on them."""
    k = math.ceil(max_dist / (h3.average_hexagon_edge_length(res, unit="m") * math.sqrt(3))) + 1
    disk = np.array(
        [h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(lat, lng, res), k)], dtype=np.int64
    )
    near = np.flatnonzero(np.isin(cells, disk))
    return near[haversine_m(lat, lng, lats[near], lngs[near]) <= max_dist]
