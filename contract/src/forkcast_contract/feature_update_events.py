"""The record of a live feature update on FEATURE_UPDATES_STREAM, built from the bytes that were written.

Both producers (the gateway's admin route, forkcast_gateway.feature_updates; the feature-store CLI,
forkcast_features.updates) call :func:`update_event_fields` with the stored value they have just written, so the
record carries the values *as stored* (float32 features, coordinates quantised to 1e-7 degree), never the request's
float64 inputs: the lake's point-in-time training table then joins a prediction with exactly what inference read.
Only the XADD is the producers' own (sync in the CLI, asyncio in the gateway; the contract does not depend on redis).
"""

from __future__ import annotations

import json
from typing import Literal

from forkcast_contract.feature_store import unpack_restaurants, unpack_users
from forkcast_contract.streams import FEATURE_UPDATE_FIELDS

Entity = Literal["user", "restaurant"]


def update_event_fields(
    entity: Entity, entity_id: int, feature_version: str, value: bytes, time: float, actor: str
) -> dict[str, str]:
    """The stream fields of one update (FEATURE_UPDATE_FIELDS order) from the stored ``value``.

    Each float32 is widened to float64 (exact) and written by ``json`` as its shortest round-tripping repr, so a
    reader that parses it as float64 and narrows to float32 gets the stored value bit for bit.
    """
    if entity == "user":
        features = unpack_users([value])[0]
        latitude = longitude = ""
    else:
        unpacked = unpack_restaurants([value])
        features = unpacked.features[0]
        latitude, longitude = repr(float(unpacked.latitude[0])), repr(float(unpacked.longitude[0]))
    values = (
        entity,
        str(entity_id),
        feature_version,
        json.dumps([float(v) for v in features]),
        latitude,
        longitude,
        f"{time:.6f}",
        actor,
    )
    return dict(zip(FEATURE_UPDATE_FIELDS, values, strict=True))
