"""The `status` view: every version with its state, counts and timestamps, and which one is live."""

from __future__ import annotations

from forkcast_features.client import Client
from forkcast_features.versions import list_versions, live_version


def describe_status(client: Client, prefix: str) -> str:
    live = live_version(client, prefix)
    lines = [f"prefix {prefix}: live version {live or 'none'}"]
    for m in list_versions(client, prefix):
        mark = "*" if m.version == live else " "
        lines.append(
            f"{mark} {m.version} {m.state:<8} users {m.users_loaded:,}/{m.users:,} "
            f"restaurants {m.restaurants_loaded:,}/{m.restaurants:,} schema {m.feature_schema_hash} "
            f"source {m.source_fingerprint[:12]} created {m.created_at} verified {m.verified_at or '-'} "
            f"activated {m.activated_at or '-'} retired {m.deactivated_at or '-'} updates {m.updates}"
            + (f" restaurant copies {m.restaurant_copies}" if m.restaurant_copies else "")
        )
    return "\n".join(lines)
