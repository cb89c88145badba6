"""The feature reader on a Redis Cluster (``FORKCAST_REDIS_CLUSTER=1``, ``REDIS_URL`` naming any node): issue 19.

Layout (forkcast_contract.feature_store): user keys spread over every slot; the restaurant table has one copy per
master, each under a tag whose slot that master owns, with a copy of the live pointer and a revision counter in the
same slot. A request reads, from the master that owns its user key, ONE pipeline of two commands:

    GET <user key>      MGET <pointer copy> <copy's revision> <in-range restaurants of the copy>

so a request costs one round trip to one node and the reads spread over the masters as the users do
(`featurestore/benchmarks/bench_cluster.py`, featurestore/BENCHMARKS.md). When the user's master holds no copy (a
resharding after the load), the copy's MGET goes to its own master and both round trips run at once: each node's
commands are sent before any reply is read.

Consistency, as on one node: every key a request reads names the version this worker holds, and the MGET that
returns the values also returns the pointer copy and the revision of that copy, atomically (one slot). A moved
pointer reloads the version, a moved revision reloads that copy's coordinates; then the request is fetched again.

Failover: a reply MOVED/ASK/CLUSTERDOWN/TRYAGAIN, or a connection that failed, marks the slot map stale; the map is
read again (``CLUSTER SLOTS`` via redis-py's NodesManager) before the next fetch, and a MOVED reply is retried at
once. A request that still fails raises ``redis.RedisError`` (the app answers 503 and counts it in
``forkcast_inference_errors_total{cause="redis_unavailable"}``); no request answers from a half-read version.

Why raw pipelines on redis-py's per-node connections rather than ``RedisCluster.pipeline()``: the cluster pipeline
runs the nodes one after another and re-resolves every command's slot; here the two commands' nodes are known
from two CRC16 computations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import redis
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from forkcast_contract.feature_store import (
    FEATURE_WIRE_DTYPE,
    USER_VALUE_BYTES,
    FeatureKeys,
    VersionMeta,
    copy_tag_body,
    meta_key,
    parse_copies,
    pointer_copy_key,
    pointer_key,
)
from forkcast_inference.features import (
    CorruptUserError,
    Fetched,
    NoLiveVersionError,
    SelectFn,
    VersionState,
    load_coordinates,
)

_MAX_ATTEMPTS = 3
# Replies that mean the slot map this worker holds is out of date (a failover or a resharding).
_TOPOLOGY_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)

Command = tuple[Any, ...]
# Commands per node, by node name: what one request sends (one pipeline per node).
Plan = dict[str, tuple[ClusterNode, list[Command]]]


def connect_cluster(url: str, timeout_s: float) -> RedisCluster:
    """A Cluster client that discovers every node from the one ``url`` names; every call bounded by ``timeout_s``."""
    return RedisCluster.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


@dataclass
class _Held:
    """The version this worker serves: its copies, which master holds each, and the copies loaded so far."""

    keys: FeatureKeys
    meta: VersionMeta
    copies: list[str]
    copy_of_node: dict[str, str] = field(default_factory=dict)
    node_of_copy: dict[str, ClusterNode] = field(
        default_factory=dict
    )  # computed once per slot map, not per request
    pointer_of_copy: dict[str, str] = field(default_factory=dict)
    states: dict[str, VersionState] = field(default_factory=dict)


class ClusterFeatureReader:
    """``FeatureSource`` on a Redis Cluster: one round trip to the user's master per request."""

    def __init__(self, cluster: RedisCluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.pointer = pointer_key(prefix)
        self.state: VersionState | None = None
        self.held: _Held | None = None
        # Times the slot map was read again (failover, resharding): tests and logs read it.
        self.topology_refreshes = 0
        self._stale = False
        self.connections = NodeConnections()

    # -- versions and copies -------------------------------------------------------------------------------------
    def load(self, version: str) -> VersionState:
        """Read ``version``'s metadata and the coordinates in each of its copies (before ready, not on a request)."""
        raw_meta = cast("dict[bytes, bytes]", self.cluster.hgetall(meta_key(self.prefix, version)))
        if not raw_meta:
            raise NoLiveVersionError(f"feature version {version} has no metadata")
        meta = VersionMeta.from_redis(raw_meta)
        held = _Held(FeatureKeys(self.prefix, version), meta, parse_copies(meta.restaurant_copies))
        self._map_copies(held)
        self.held = held
        for copy in reversed(held.copies):
            self.state = self._load_copy(held, copy)
        return cast("VersionState", self.state)

    def _load_copy(self, held: _Held, copy: str) -> VersionState:
        keys = held.keys.with_copy(copy)
        # The revision is read before the coordinates: a change in between is seen by the next request.
        revision = cast("bytes | None", self.cluster.get(keys.restaurant_revision)) or b""
        lat, lng = load_coordinates(self.cluster, keys, held.meta.restaurants)
        state = VersionState(keys, held.meta, revision, lat, lng)
        held.states[copy] = state
        return state

    def _map_copies(self, held: _Held) -> None:
        held.copy_of_node = {}
        for copy in reversed(held.copies):  # the first copy wins where two share a master
            if copy:
                node = self._node(key_slot(copy_tag_body(self.prefix, copy).encode()))
                held.copy_of_node[node.name] = copy
                held.node_of_copy[copy] = node
                held.pointer_of_copy[copy] = pointer_copy_key(self.prefix, copy)

    def _node(self, slot: int) -> ClusterNode:
        # The slot map's primary, read directly: NodesManager.get_node_from_slot costs ≈ 7 µs per call (a
        # deprecated-argument wrapper and a lock) against 0.05 µs (same micro-measurement as NodeConnections).
        try:
            return self.cluster.nodes_manager.slots_cache[slot][0]
        except (KeyError, IndexError):  # a slot no master serves (mid-failover): a Redis outage for the app
            self._stale = True
            raise redis.ConnectionError(f"slot {slot} is not covered by the slot map") from None

    def refresh_topology(self, moved: tuple[redis.exceptions.MovedError, ...] = ()) -> None:
        """Read the slot map again and re-map the copies to the masters that own them now.

        ``moved``: the MOVED replies that made the map stale. Their targets join the nodes the map may be read from,
        and once it is read each reply's slot is pointed at its target, as redis-py's own cluster client does on a
        MOVED (``NodesManager.move_slot``, redis/cluster.py): right after a failover a node that gossip has not
        reached yet still serves the old map, and a request that met it on all its attempts was a 503 (1 run in ~20
        of the failover test before).
        """
        self.topology_refreshes += 1
        self.connections.close()  # nodes may have gone or changed role
        manager = self.cluster.nodes_manager
        try:
            manager.initialize(additional_startup_nodes_info=[(m.host, m.port) for m in moved] or None)
            for reply in moved:
                manager.move_slot(reply)
        except RedisClusterException as exc:
            # redis-py raises this (not a RedisError) while slots are uncovered, e.g. before a replica took over.
            raise redis.ConnectionError(f"slot map: {exc}") from exc
        self._stale = False
        if self.held is not None:
            self._map_copies(self.held)

    def current(self) -> VersionState:
        """The live version's state, loading it if the live pointer moved (readiness and start)."""
        if self._stale:
            self.refresh_topology()
        try:
            live = cast("bytes | None", self.cluster.get(self.pointer))
        except RedisClusterException as exc:
            raise redis.ConnectionError(f"cluster: {exc}") from exc
        if live is None:
            raise NoLiveVersionError(f"{self.pointer} names no feature version")
        name = live.decode()
        if self.held is None or self.state is None or self.held.keys.version != name:
            return self.load(name)
        return self.state

    # -- the hot path --------------------------------------------------------------------------------------------
    async def fetch(self, user_id: int, select: SelectFn) -> Fetched:
        """The user and the selected candidates from the user's master, all of one version; see the module doc.

        A coroutine for the ``FeatureSource`` protocol, but its round trips still block the event loop (one per
        node, on redis-py connections): the pipelined connection (forkcast_inference.pipelined) serves the
        standalone reader only so far.
        """
        if self._stale:
            self.refresh_topology()
        held = self.held
        if held is None:
            self.current()
            held = cast("_Held", self.held)
        moved: list[Any] = []
        reconnected = False
        for _ in range(_MAX_ATTEMPTS):
            user_key = held.keys.user(user_id)
            user_node = self._node(key_slot(user_key.encode()))
            copy = held.copy_of_node.get(user_node.name, held.copies[0])
            state = held.states.get(copy) or self._load_copy(held, copy)
            self.state = state
            ids = select(state)
            keys = state.keys
            base = keys.restaurant_base
            rest_keys = [f"{base}{i}" for i in ids.tolist()]
            plan: Plan = {user_node.name: (user_node, [("GET", user_key)])}
            if copy:
                mget: Command = ("MGET", held.pointer_of_copy[copy], keys.restaurant_revision, *rest_keys)
                self._add(plan, held.node_of_copy[copy], mget)
            else:  # a version loaded as one table: the canonical pointer lives in a slot of its own
                self._add(plan, self._node(key_slot(self.pointer.encode())), ("GET", self.pointer))
                mget = ("MGET", keys.restaurant_revision, *rest_keys)
                self._add(plan, self._node(key_slot(keys.restaurant_revision.encode())), mget)
            try:
                replies = self._round_trips(plan)
            except redis.ConnectionError:
                # Once per request: a node closed an idle connection (a demoted master does), or the node is gone
                # and a new slot map names its successor. A timeout is not retried (it would double the deadline).
                if reconnected:
                    raise
                reconnected = True
                self.refresh_topology()
                continue
            moved = [r for r in replies.values() if isinstance(r, _TOPOLOGY_ERRORS)]
            if moved:
                self.refresh_topology(tuple(r for r in moved if isinstance(r, redis.exceptions.MovedError)))
                continue
            for reply in replies.values():
                if isinstance(reply, redis.RedisError):
                    raise reply
            raw_user = cast("bytes | None", replies[("GET", user_key)])
            values = cast("list[bytes | None]", replies[mget])
            if not copy:
                values = [cast("bytes | None", replies[("GET", self.pointer)]), *values]
            live = values[0]
            if live is None:
                raise NoLiveVersionError(f"{self.pointer} names no feature version")
            if live.decode() != keys.version:
                self.load(live.decode())
                held = cast("_Held", self.held)
                continue
            if (values[1] or b"") != state.revision:
                self._load_copy(held, copy)
                continue
            user = None
            if raw_user is not None:
                if len(raw_user) != USER_VALUE_BYTES:
                    raise CorruptUserError(f"user {user_id} value has {len(raw_user)} bytes")
                user = np.frombuffer(raw_user, dtype=FEATURE_WIRE_DTYPE)
            return Fetched(keys.version, state.meta.feature_schema_hash, user, ids, values[2:])
        if moved:  # still moving after every attempt: an outage of the store, not a missing version
            raise redis.ConnectionError(f"slot map kept changing during the request: {moved[0]}")
        raise NoLiveVersionError("feature version kept changing during the request")

    @staticmethod
    def _add(plan: Plan, node: ClusterNode, command: Command) -> None:
        plan.setdefault(node.name, (node, []))[1].append(command)

    def _round_trips(self, plan: Plan) -> dict[Command, Any]:
        try:
            return round_trips(plan, self.connections)
        except (redis.ConnectionError, redis.TimeoutError):
            self._stale = True  # a node failed or stalled: the slot map may be stale
            raise


class NodeConnections:
    """One connection per node, reused by every request of this worker.

    Why not the node's pool per request: taking and releasing a pooled connection cost 34-50 µs of CPU per request
    in redis-py 8.1 (a micro-measurement of 20,000 rounds on the shared 2-core VM, 2026-12-05), more than the rest
    of the round trip. Safe because a worker calls Redis from one thread only (the app's event loop, synchronously:
    forkcast_inference.app); a connection that failed is closed and reconnects on its next use.

    One connection object per node for the worker's life: ``make_connection`` counts it against the node pool's
    ``max_connections`` (100 by default in redis-py 8.1) and nothing gives that back, so a new one per slot-map
    refresh ran the pool out after ~100 refreshes (a dead master costs one per request): every request then failed
    with MaxConnectionsError, although the slot map already named the promoted replica.
    """

    def __init__(self) -> None:
        self._conns: dict[str, Any] = {}

    def get(self, node: ClusterNode) -> Any:
        conn = self._conns.get(node.name)
        if conn is None:
            pool = cast("redis.Redis", node.redis_connection).connection_pool
            conn = self._conns[node.name] = pool.make_connection()
        return conn

    def close(self) -> None:
        """Drop every socket (nodes may have gone or changed role); each connection reconnects on its next send."""
        for conn in self._conns.values():
            conn.disconnect()


def round_trips(plan: Plan, connections: NodeConnections) -> dict[Command, Any]:
    """Each node's commands as one pipeline, all nodes' sent before any reply is read; replies by command.

    A reply that is an error comes back as the exception object (as in a redis-py pipeline), so the caller can tell
    a moved slot from a real failure. On a connection or timeout error every connection used is closed (one may
    hold half a reply) and the error raised.
    """
    taken: list[tuple[Any, list[Command]]] = []
    replies: dict[Command, Any] = {}
    try:
        for node, commands in plan.values():
            conn = connections.get(node)
            taken.append((conn, commands))
            # hiredis's packer directly: 16.8 µs for a request's two commands against 56 µs through redis-py 8.1's
            # Connection.pack_commands, which inspects every argument in Python first (same micro-measurement).
            conn.send_packed_command([b"".join([pack_command(c) for c in commands])], check_health=False)
        for conn, commands in taken:
            for command in commands:
                try:
                    replies[command] = conn.read_response()
                except redis.ResponseError as exc:
                    replies[command] = exc
    except (redis.ConnectionError, redis.TimeoutError):
        for conn, _ in taken:
            conn.disconnect()
        raise
    return replies
