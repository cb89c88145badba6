"""Verify a loaded version against its source before it may go live.

Two checks: every expected key exists (EXISTS over all ids, so a lost batch is caught, not just a wrong total),
and a random sample of values equals the packed source byte for byte. On a Cluster both run on every restaurant
copy (``restaurants_expected`` is then restaurants × copies): a copy that lost a batch would answer the users of
its master wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forkcast_contract.feature_store import (
    STATE_LOADED,
    STATE_VERIFIED,
    FeatureKeys,
    pack_restaurants,
    pack_users,
    parse_copies,
)
from forkcast_features.client import Client, count_existing, mget
from forkcast_features.source import SourceData
from forkcast_features.versions import now, read_meta, set_fields


@dataclass
class VerifyReport:
    version: str
    users_present: int
    restaurants_present: int
    users_expected: int
    restaurants_expected: int
    sampled: int
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.users_present == self.users_expected
            and self.restaurants_present == self.restaurants_expected
            and not self.mismatches
        )

    def describe(self) -> str:
        head = (
            f"version {self.version}: users {self.users_present}/{self.users_expected}, "
            f"restaurants {self.restaurants_present}/{self.restaurants_expected}, "
            f"{self.sampled} sampled values, {len(self.mismatches)} mismatches"
        )
        return "\n".join([head, *self.mismatches[:10]])


class VerifyError(RuntimeError):
    """The loaded version disagrees with its source; it is not marked verified and cannot be activated."""


def verify_version(
    client: Client, source: SourceData, *, prefix: str, version: str, sample: int, seed: int | None = None
) -> VerifyReport:
    """Check ``version`` against ``source``; marks it verified when it agrees, raises VerifyError otherwise."""
    meta = read_meta(client, prefix, version)
    if meta is None:
        raise VerifyError(f"version {version} does not exist")
    if meta.state not in (STATE_LOADED, STATE_VERIFIED):
        raise VerifyError(f"version {version} is {meta.state}, not loaded: rerun the load to finish it")
    keys = FeatureKeys(prefix, version)
    copies = [keys.with_copy(c) for c in parse_copies(meta.restaurant_copies)]
    users, rests = source.users, source.restaurants
    rest_ids = rests.ids.tolist()
    report = VerifyReport(
        version=version,
        users_present=count_existing(client, [f"{keys.user_base}{i}" for i in users.ids.tolist()]),
        restaurants_present=sum(
            count_existing(client, [f"{k.restaurant_base}{i}" for i in rest_ids]) for k in copies
        ),
        users_expected=len(users.ids),
        restaurants_expected=len(rests.ids) * len(copies),
        sampled=0,
    )
    rng = np.random.default_rng(seed)
    u_rows = rng.choice(len(users.ids), size=min(sample, len(users.ids)), replace=False)
    r_rows = rng.choice(len(rests.ids), size=min(sample, len(rests.ids)), replace=False)
    u_expected = pack_users(users.features[u_rows])
    r_expected = pack_restaurants(rests.latitude[r_rows], rests.longitude[r_rows], rests.features[r_rows])
    checks = [
        ("user", u_rows, users.ids, mget(client, [keys.user(int(users.ids[r])) for r in u_rows]), u_expected)
    ]
    for k in copies:
        r_online = mget(client, [k.restaurant(int(rests.ids[r])) for r in r_rows])
        label = f"restaurant (copy {k.copy})" if k.copy else "restaurant"
        checks.append((label, r_rows, rests.ids, r_online, r_expected))
    for kind, rows, ids, online, expected in checks:
        width = len(expected) // max(len(rows), 1)
        for j, (row, value) in enumerate(zip(rows.tolist(), online, strict=True)):
            if value != expected[j * width : (j + 1) * width]:
                got = "missing" if value is None else f"{len(value)} bytes differing"
                report.mismatches.append(f"{kind} {int(ids[row])} (source row {row}): {got}")
        report.sampled += len(rows)
    if not report.ok:
        raise VerifyError(report.describe())
    set_fields(client, prefix, version, state=STATE_VERIFIED, verified_at=now())
    return report
