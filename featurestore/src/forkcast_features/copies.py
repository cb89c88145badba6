"""Restaurant copies on a Redis Cluster: one copy of the small restaurant table per master (issue 19).

Why copies: with one hash tag per version every request's ~18-70 candidates came from one slot on one master, which
then carried nearly all of the Cluster's reads. A copy per master, each under a tag whose slot that master owns,
lets a request read its candidates from the master that already holds its user key: one round trip to one node,
and the reads spread as evenly as the users do. The cost is memory: 100k restaurants × 56 B ≈ 6 MB per master.
The alternative, tagging restaurants by a coarse H3 cell, is measured against this in
featurestore/benchmarks/bench_cluster.py (figures in featurestore/BENCHMARKS.md).

The copy names are chosen when a version's load starts, from the Cluster's slot map then, and recorded in the
version's metadata; a reader maps each copy to the master that owns its slot now, so a resharding later only costs
a second round trip for the users whose master holds no copy, never a wrong answer.
"""

from __future__ import annotations

from redis.cluster import RedisCluster
from redis.crc import key_slot

from forkcast_contract.feature_store import copy_tag_body, pointer_copy_key
from forkcast_features.client import Client

# Redis Cluster has 16,384 slots (redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/, "Key
# distribution model"); 100× as many candidate names as masters always finds one per master in practice.
_MAX_CANDIDATES = 16_384


def copy_slot(prefix: str, copy: str) -> int:
    """The slot of every key of restaurant copy ``copy`` (CRC16 of the hash tag, as Redis computes it)."""
    return int(key_slot(copy_tag_body(prefix, copy).encode()))


def choose_copies(client: Client, prefix: str) -> list[str]:
    """One copy name per master of the Cluster (``c<j>``, smallest j whose slot the master owns); [] standalone."""
    if not isinstance(client, RedisCluster):
        return []
    primaries = {n.name for n in client.get_primaries()}  # type: ignore[no-untyped-call]
    chosen: dict[str, str] = {}
    for j in range(_MAX_CANDIDATES):
        name = f"c{j}"
        owner = client.nodes_manager.get_node_from_slot(copy_slot(prefix, name)).name
        if owner in primaries and owner not in chosen:
            chosen[owner] = name
            if len(chosen) == len(primaries):
                break
    return sorted(chosen.values(), key=lambda c: int(c[1:]))


def sync_pointer_copies(client: Client, prefix: str, version: str, copies: list[str]) -> None:
    """Point every pointer copy at ``version`` (after the canonical pointer switched; see cutover)."""
    for copy in copies:
        if copy:
            client.set(pointer_copy_key(prefix, copy), version)
