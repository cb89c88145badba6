"""Training–serving consistency: compare online values with the offline parquet the trainer reads.

The trainer casts the parquet's float64 features to float32; serving unpacks float32 from Redis. Any difference
(beyond none at all) means layout or dtype drift between loader and trainer, or a live update since the load;
the report names the entity, the column and both values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forkcast_contract.feature_store import (
    COORD_SCALE,
    FeatureKeys,
    parse_copies,
    unpack_restaurants,
    unpack_users,
)
from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES
from forkcast_features.client import Client, mget
from forkcast_features.source import read_source
from forkcast_features.versions import live_version, read_meta

# Coordinates are stored in 1e-7 degree steps: half a step is the most a correct value may differ.
COORD_TOLERANCE_DEG = 0.5 / COORD_SCALE + 1e-12


@dataclass
class CheckReport:
    version: str
    users_checked: int = 0
    restaurants_checked: int = 0
    differences: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = (
            f"version {self.version}: {self.users_checked} users, {self.restaurants_checked} restaurants checked, "
            f"{len(self.differences)} differences"
        )
        return "\n".join([head, *self.differences[:20]])


def check_consistency(
    client: Client,
    prefix: str,
    data_dir: Path,
    *,
    sample: int,
    version: str | None = None,
    seed: int | None = None,
) -> CheckReport:
    """Sample ids, read them online and offline, and list every difference."""
    source = read_source(data_dir)
    version = version or live_version(client, prefix)
    if version is None:
        raise LookupError("no live feature version and none given")
    meta = read_meta(client, prefix, version)
    # On a Cluster the first restaurant copy; verify (before activation) compares every copy with the source.
    keys = FeatureKeys(prefix, version, parse_copies(meta.restaurant_copies if meta else "")[0])
    report = CheckReport(version)
    rng = np.random.default_rng(seed)
    users, rests = source.users, source.restaurants

    u_rows = rng.choice(len(users.ids), size=min(sample, len(users.ids)), replace=False)
    u_online = mget(client, [keys.user(int(users.ids[r])) for r in u_rows])
    for row, value in zip(u_rows.tolist(), u_online, strict=True):
        uid = int(users.ids[row])
        if value is None:
            report.differences.append(f"user {uid}: missing online")
            continue
        online = unpack_users([value])[0]
        offline = users.features[row].astype(np.float32)
        for col in np.flatnonzero(online != offline).tolist():
            report.differences.append(
                f"user {uid} {USER_FEATURES[col]}: offline {offline[col]!r} online {online[col]!r}"
            )
    report.users_checked = len(u_rows)

    r_rows = rng.choice(len(rests.ids), size=min(sample, len(rests.ids)), replace=False)
    r_online = mget(client, [keys.restaurant(int(rests.ids[r])) for r in r_rows])
    for row, value in zip(r_rows.tolist(), r_online, strict=True):
        rid = int(rests.ids[row])
        if value is None:
            report.differences.append(f"restaurant {rid}: missing online")
            continue
        online = unpack_restaurants([value])
        offline = rests.features[row].astype(np.float32)
        for col in np.flatnonzero(online.features[0] != offline).tolist():
            report.differences.append(
                f"restaurant {rid} {RESTAURANT_FEATURES[col]}: offline {offline[col]!r} "
                f"online {online.features[0][col]!r}"
            )
        for name, off, on in (
            ("latitude", rests.latitude[row], online.latitude[0]),
            ("longitude", rests.longitude[row], online.longitude[0]),
        ):
            if abs(off - on) > COORD_TOLERANCE_DEG:
                report.differences.append(f"restaurant {rid} {name}: offline {off!r} online {on!r}")
    report.restaurants_checked = len(r_rows)
    return report
