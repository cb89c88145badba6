"""One request's ranking: distance filter on the in-memory coordinates, scoring, sort with id tie-break, truncate.

Pure numpy on arrays, no I/O, so that it is unit-testable and its cost is measurable by stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forkcast_contract.feature_store import (
    COORD_WIRE_DTYPE,
    FEATURE_WIRE_DTYPE,
    RESTAURANT_VALUE_BYTES,
)
from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT
from forkcast_contract.geo import bbox_mask, haversine_m
from forkcast_inference.features import VersionState
from forkcast_inference.folded import FoldedModel, sigmoid

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# A restaurant value is its two int32 coordinates, then its float32 features (forkcast_contract.feature_store).
_COORD_BYTES = 2 * COORD_WIRE_DTYPE.itemsize


@dataclass
class Selection:
    """The in-range candidates of a request (unique ids ascending) and their displacement in metres."""

    ids: I64
    displacement: F64
    asked: int  # candidates in the request
    unknown: int  # ids not in the live version (out of its id range, absent or corrupt at load)


def select_in_range(
    state: VersionState, candidates: I64, lat: float, lng: float, max_dist: float
) -> Selection:
    """Bounding box then exact haversine on the box's survivors; duplicates count once.

    The box halves the distance work on 1,000 candidates (20 vs 43 µs, featurestore/BENCHMARKS.md); np.unique
    runs only on the few box survivors.
    """
    n = len(state.lat)
    known = candidates[candidates < n]
    lats, lngs = state.lat[known], state.lng[known]
    # count_nonzero: 0.8 µs on 1,000 coordinates where isnan(...).sum() took 7.4 µs (2026-12-05, timeit).
    unknown = len(candidates) - len(known) + int(np.count_nonzero(np.isnan(lats)))
    # Sorted and de-duplicated by hand: np.unique costs 8.9 µs on the ~60 box survivors, this 5.6 µs (2026-12-05).
    box = np.sort(known[bbox_mask(lat, lng, lats, lngs, max_dist)])
    if len(box) > 1:
        box = box[np.concatenate(([True], box[1:] != box[:-1]))]
    disp = haversine_m(lat, lng, state.lat[box], state.lng[box])
    keep = disp <= max_dist
    return Selection(box[keep], disp[keep], len(candidates), unknown)


@dataclass
class Ranked:
    ids: I64
    scores: F64
    displacement: F64
    skipped: int  # fetched values that were absent (deleted since) or of the wrong length


def rank(
    model: FoldedModel,
    user: npt.NDArray[np.float32],
    selection: Selection,
    values: list[bytes | None],
    size: int,
    sort_dist: bool,
) -> Ranked:
    """Score the fetched in-range candidates in one matrix product, sort, truncate to ``size``.

    Order: score descending (or displacement ascending), then id ascending, so the output is deterministic.
    """
    ids, disp = selection.ids, selection.displacement
    if None not in values and set(map(len, values)) <= {RESTAURANT_VALUE_BYTES}:  # type: ignore[arg-type]
        good, skipped = [], 0  # the usual case, checked in C
    else:
        good = [i for i, v in enumerate(values) if v is not None and len(v) == RESTAURANT_VALUE_BYTES]
        skipped = len(values) - len(good)
    if skipped:
        ids, disp = ids[good], disp[good]
        values = [values[i] for i in good]
    if not len(ids):
        return Ranked(ids, np.empty(0), disp, skipped)
    # The features of each value (after its 8 bytes of coordinates) viewed in place, converted in one copy: the
    # uint8 view, slice copy and re-view it replaces cost 1.4 µs more per request (2,000 real requests, 2026-12-05).
    feats = np.ndarray(
        (len(values), RESTAURANT_FEATURE_COUNT),
        FEATURE_WIRE_DTYPE,
        b"".join(values),  # type: ignore[arg-type]
        _COORD_BYTES,
        (RESTAURANT_VALUE_BYTES, FEATURE_WIRE_DTYPE.itemsize),
    ).astype(np.float64)
    scores = sigmoid(model.logits(user.astype(np.float64), feats))
    # lexsort: last key is primary; ids is the tie-break.
    order = np.lexsort((ids, disp)) if sort_dist else np.lexsort((ids, -scores))
    order = order[:size]
    return Ranked(ids[order], scores[order], disp[order], skipped)


def warm_up(model: FoldedModel, state: VersionState) -> None:
    """Run the request path's numpy once, on the live coordinates and made-up features, before serving.

    Why: a process's first ``select_in_range`` took 37 ms (numpy's lazy first calls; 0.02 ms after). A canary's
    first request paid it, and on an analysis window of a few requests that one request was the canary's p95:
    75 ms against the 50 ms bar, and the end-to-end drill rolled back a good model.
    """
    known = np.flatnonzero(~np.isnan(state.lat))[:64].astype(np.int64)
    if not len(known):
        return
    lat, lng = float(state.lat[known[0]]), float(state.lng[known[0]])
    selection = select_in_range(state, known, lat, lng, 50_000.0)
    values: list[bytes | None] = [bytes(RESTAURANT_VALUE_BYTES)] * len(selection.ids)
    user = np.zeros(USER_FEATURE_COUNT, dtype=np.float32)
    for sort_dist in (False, True):
        rank(model, user, selection, values, 10, sort_dist)
