"""The feature reader on a Redis Cluster (``FORKCAST_REDIS_CLUSTER=1``, ``REDIS_URL`` naming any node): issue 19.

Layout (forkcast_contract.feature_store): user keys spread over every slot; the restaurant table has one copy per
master, each under a tag whose slot that master owns, with a copy of the live pointer and a revision counter in the
same slot. A request reads, from the master that owns its user key, ONE pipeline of two commands:

    GET <user key>      MGET <pointer copy> <copy's revision> <in-range restaurants of the copy>

so a request costs one round trip to one node and the reads spread over the masters as the users do
(`featurestore/benchmarks/bench_cluster.py`, featurestore/BENCHMARKS.md). When the user's master holds no copy (a
resharding after the load), the copy's MGET goes to its own master and the two nodes' round trips run at once.

Non-blocking: each node's commands go out together on the worker's one pipelined asyncio connection to that node
(forkcast_inference.pipelined, ``PipelinedRedis.execute_all``, held by ``NodePipes``), the nodes concurrently, and
the request awaits the replies: the event loop serves other requests meanwhile, and the concurrent requests to one
node share its round trips and socket writes, as the standalone reader's do. In-process on the tiny dataset, 2,000
real requests at 16 concurrent, alternated A/B (3 sets, 10 pairs, 2026-12-05, 2-core VM at load 2.3-2.6): 243-351
µs of CPU per request (median 257) against 262-328 µs (median 290) with the blocking reader, lower in 9 of 10
pairs (services/inference/BENCHMARKS.md, "Issue 19: the Cluster read"). Only the rare calls block the loop:
loading a version or a copy's coordinates (``load``, ``current``) at start and when a request meets a version
change; /readyz calls ``current`` in a worker thread (``InferenceApp.check_readiness``). Reading the slot map again
(redis-py's ``NodesManager.initialize``, on a failover or a resharding) runs in a worker thread.

Consistency, as on one node: every key a request reads names the version the request holds, and the MGET that
returns the values also returns the pointer copy and the revision of that copy, atomically (one slot). A moved
pointer reloads the version, a moved revision reloads that copy's coordinates; then the request is fetched again.

Resharding: a command answered ASK (its key already left a slot being migrated) is sent again, after ASKING, to the
node the reply names, in the same request. A copy's MGET answered TRYAGAIN (the migration split its keys between two
nodes, for as long as the migration of that slot lasts) is sent, on the next attempt and at once, to the first copy
in the version's list on another master: every copy holds the same version, with its own pointer copy and
revision in its MGET, so one version is still read and the answer is the same (while a live restaurant update is
being written, copy after copy, a copy may hold it a moment before or after another). Only when no such copy is
left (a version loaded as one table, every copy split) does the request try the same copy again after 50 ms. Neither
reads the slot map again; a MOVED met in the same attempt is followed as below, in that attempt.

Failover: a request answered MOVED/CLUSTERDOWN awaits a read of the slot map (``CLUSTER SLOTS``, off the loop),
points each MOVED reply's slot at its target and tries again; a failed connection does the same once per request; a
timeout is not retried (it would double the deadline) and has the next request start a read without waiting for it
(unless one began since the timed-out attempt did): the stalled master may stall the read too. A failover fails many
concurrent requests at once, so the reads are single-flight: a request starts one only if none is in flight and none
began since its attempt did (a refresh generation), else it awaits the one in flight or retries on the map already
read. After a failed read (no node answers, slots uncovered) none starts for 1 s and requests that need one fail at
once. A read closes only the connections of nodes that left the map. A request out of attempts raises what its last
attempt met: a redirection or a lost connection raises ``redis.ConnectionError`` (the app answers 503 and counts it
in ``forkcast_inference_errors_total{cause="redis_unavailable"}``), a version or revision that changed again
``NoLiveVersionError`` (``cause="no_feature_version"``); no request answers from a half-read version.

Why raw pipelines rather than redis-py's ``RedisCluster.pipeline()``: the cluster pipeline runs the nodes one after
another and re-resolves every command's slot; here the two commands' nodes are known from two CRC16 computations.
redis-py's asyncio cluster client (not measured here) packs every command in Python, as its sync one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY, ClusterNode, NodesManager, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from forkcast_contract.feature_store import (
    FeatureKeys,
    VersionMeta,
    copy_tag_body,
    meta_key,
    parse_copies,
    pointer_copy_key,
    pointer_key,
)
from forkcast_inference.features import (
    Fetched,
    NoLiveVersionError,
    SelectFn,
    VersionState,
    load_coordinates,
    user_features,
)
from forkcast_inference.pipelined import PipelinedRedis

_MAX_ATTEMPTS = 3
# Replies that mean the slot map this worker holds is out of date (a failover or a resharding). ASK and TRYAGAIN
# (a slot being migrated) do not: they are answered in ``_asked`` and by reading another copy (``_copy_for``).
_TOPOLOGY_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.AskError,  # an ASK answered to a command sent with ASKING: the migration moved on
)
# A multi-key command whose keys are split by a migration in progress, with no other copy left to read: redis-py's
# cluster client sleeps this long before it tries again (redis/cluster.py, ``_execute_command``, TryAgainError).
_TRYAGAIN_S = 0.05

# After a failed slot-map read (no node answers, slots uncovered) no other starts for this long: requests needing
# one fail at once (503) meanwhile. Before, every request read the map again on the event loop: 60 requests against
# one silent node at a 0.5 s timeout made 41 reads of 0.5 s each, the loop (and /healthz) frozen ~20 s; now 2 reads,
# in a thread (test_an_unreadable_slot_map_is_read_once_per_interval_off_the_loop, 2026-12-05). 1 s: short against
# the Cluster's own failure detection (cluster-node-timeout, 15 s by default), so a recovered map is found soon.
_RETRY_AFTER_FAILED_READ_S = 1.0

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


class NodePipes:
    """The worker's pipelined connection to each Cluster node, by node name, kept while the node is in the slot map.

    A ``PipelinedRedis`` opens its own socket from the node client's settings (host, port, ACL user, password) and
    takes nothing from the node's redis-py pool. Why it matters: the sync reader before took one connection per
    node with the pool's ``make_connection``, which counts against ``max_connections`` (100 by default in redis-py
    8.1) and never gives it back, so a new one per slot-map refresh ran the pool out after ~100 refreshes (a dead
    master costs one per request) and every request then failed with MaxConnectionsError. Here a refresh keeps the
    connections of the nodes still in the map; a dead node's connection fails its waiting requests and connects
    again on its next use; a node that left the map has its connection closed and forgotten.
    """

    def __init__(self, manager: NodesManager, timeout_s: float) -> None:
        self.manager = manager
        self.timeout_s = timeout_s
        # By node name; tests read each one's ``connects``.
        self.by_node: dict[str, PipelinedRedis] = {}

    def get(self, node: ClusterNode) -> PipelinedRedis:
        pipe = self.by_node.get(node.name)
        if pipe is None:
            if node.redis_connection is None:  # a MOVED target the last map read did not name (move_slot)
                self.manager.create_redis_connections([node])  # type: ignore[no-untyped-call]
            client = cast("redis.Redis", node.redis_connection)
            pipe = self.by_node[node.name] = PipelinedRedis(client, self.timeout_s)
        return pipe

    def keep_only(self, names: Collection[str]) -> None:
        """Close and forget the connections of the nodes not in ``names`` (the slot map's nodes)."""
        for name in [n for n in self.by_node if n not in names]:
            self.by_node.pop(name).close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ClusterFeatureReader:
    """``FeatureSource`` on a Redis Cluster: one round trip to the user's master per request, awaited."""

    def __init__(self, cluster: RedisCluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.pointer = pointer_key(prefix)
        self.state: VersionState | None = None
        self.held: _Held | None = None
        # Times the slot map was read again (failover, resharding): tests and logs read it.
        self.topology_refreshes = 0
        self._stale = False
        # The event loop this reader serves on (set by ``fetch``): ``current`` in a worker thread (/readyz) hands a
        # stale map's read to it rather than read it there, since the read's follow-up (closing connections of
        # nodes that left, re-mapping the copies) touches what only that loop may touch.
        self._loop: asyncio.AbstractEventLoop | None = None
        # ``load`` runs on the loop and in /readyz's worker thread: a load publishes only if no other load published
        # since it began, so an older load never replaces a newer one.
        self._publishing = threading.Lock()
        # The slot-map read in flight (one per worker, ``_refresh``) and when the last one failed (monotonic).
        self._refreshing: asyncio.Task[None] | None = None
        self._failed_at: float | None = None
        # Incremented by every slot-map read: a request that failed reads the map only if it is still the one its
        # attempt began with (one read per failover, not one per in-flight request).
        self._generation = 0
        manager = cluster.nodes_manager
        kwargs = manager.connection_kwargs
        # Refused at start, not at the first request: the pipelined connections speak plain TCP only.
        if kwargs.get("ssl") or issubclass(
            kwargs.get("connection_class", redis.Connection), redis.SSLConnection
        ):
            raise ValueError("the pipelined feature reader does not support TLS (rediss://) URLs")
        # The hot path's deadline is the client's (connect_cluster sets it from FORKCAST_REDIS_TIMEOUT_S).
        timeout_s = kwargs.get("socket_timeout")
        if timeout_s is None:
            raise ValueError(
                "the Cluster client needs a socket_timeout: the reader's deadline (connect_cluster)"
            )
        self.pipes = NodePipes(manager, float(timeout_s))

    # -- versions and copies -------------------------------------------------------------------------------------
    def load(self, version: str) -> VersionState:
        """Read ``version``'s metadata and the coordinates in each of its copies: at start, on /readyz (in a worker
        thread) and when a request meets a new version. Published whole, with its copies, unless another load
        published since this one began (the loaded state is still returned to the caller)."""
        before = self.held
        raw_meta = cast("dict[bytes, bytes]", self.cluster.hgetall(meta_key(self.prefix, version)))
        if not raw_meta:
            raise NoLiveVersionError(f"feature version {version} has no metadata")
        meta = VersionMeta.from_redis(raw_meta)
        held = _Held(FeatureKeys(self.prefix, version), meta, parse_copies(meta.restaurant_copies))
        generation = self._generation
        self._map_copies(held)
        state = None
        for copy in reversed(held.copies):
            state = self._load_copy(held, copy)
        with self._publishing:
            if self.held is before:
                # The slot map was read again meanwhile: map the copies on the new one.
                if self._generation != generation:
                    self._map_copies(held)
                self.held, self.state = held, state
        return cast("VersionState", state)

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
        # deprecated-argument wrapper and a lock) against 0.05 µs (a micro-measurement of 20,000 rounds on the
        # shared 2-core VM, 2026-12-05).
        try:
            return self.cluster.nodes_manager.slots_cache[slot][0]
        except (KeyError, IndexError):  # a slot no master serves (mid-failover): a Redis outage for the app
            self._stale = True
            raise redis.ConnectionError(f"slot {slot} is not covered by the slot map") from None

    def refresh_topology(self, moved: tuple[redis.exceptions.MovedError, ...] = ()) -> None:
        """Read the slot map again, blocking the caller: ``current`` before the reader serves on a loop, and tests.

        The hot path reads it off the event loop instead (``_refresh``). ``moved``: see ``_read_map``.
        """
        self._begin_read()
        self._read_map(moved)
        self._map_read(moved)

    def _begin_read(self) -> None:
        self.topology_refreshes += 1
        self._generation += 1

    def _read_map(self, moved: tuple[redis.exceptions.MovedError, ...]) -> None:
        """redis-py's ``NodesManager.initialize``: ``CLUSTER SLOTS`` from the first node that answers (blocking).

        Safe in a worker thread while the loop reads ``slots_cache``: redis-py 8.1 builds the new nodes and slots in
        local dicts and swaps both in under its lock at the end (redis/cluster.py, ``initialize``), so the loop sees
        the old map or the new one, never half of one. ``moved``: the MOVED replies that made the map stale; their
        targets join the nodes the map may be read from. A failed read is timed (``_failed_at``), so that no other
        starts for ``_RETRY_AFTER_FAILED_READ_S``.
        """
        try:
            self.cluster.nodes_manager.initialize(
                additional_startup_nodes_info=[(m.host, m.port) for m in moved] or None
            )
        except (RedisClusterException, redis.ConnectionError) as exc:
            self._failed_at = time.monotonic()
            if isinstance(exc, RedisClusterException):
                # redis-py raises this (not a RedisError) while no node answers or slots are uncovered (before a
                # replica took over).
                raise redis.ConnectionError(f"slot map: {exc}") from exc
            raise

    def _map_read(self, moved: tuple[redis.exceptions.MovedError, ...]) -> None:
        """After a successful read, on the loop: keep the connections of the nodes still in the map (other requests
        wait on them), close those of nodes that left it, and follow ``moved``.

        Each MOVED reply's slot is pointed at its target, as redis-py's own cluster client does on a MOVED
        (``NodesManager.move_slot``): right after a failover a node that gossip has not reached yet still serves the
        old map, and a request that met it on all its attempts was a 503 (1 run in ~20 of the failover test before).
        """
        self._stale = False
        self._failed_at = None
        self.pipes.keep_only(self.cluster.nodes_manager.nodes_cache)
        self._follow(moved)

    def _follow(self, moved: tuple[redis.exceptions.MovedError, ...]) -> None:
        """Point each MOVED reply's slot at its target (no round trip) and re-map the copies."""
        for reply in moved:
            self.cluster.nodes_manager.move_slot(reply)
        if self.held is not None:
            self._map_copies(self.held)

    def _refresh(self, moved: tuple[redis.exceptions.MovedError, ...] = ()) -> asyncio.Task[None]:
        """The worker's one slot-map read in flight, started with ``moved`` if none is: every request awaits the same.

        Off the event loop (``asyncio.to_thread``): ``CLUSTER SLOTS`` to a stalled or silently dead node blocks
        for the socket timeout, and a node list with none reachable for nodes × the connect timeout; on the loop
        that froze every request and /healthz with it. After a FAILED read no other starts for
        ``_RETRY_AFTER_FAILED_READ_S``: requests that need one meanwhile fail at once with ``redis.ConnectionError``
        (a 503) instead of each reading the map again.
        """
        loop = asyncio.get_running_loop()
        task = self._refreshing
        if task is not None and not task.done() and task.get_loop() is loop:
            return task
        if self._failed_at is not None:
            wait = self._failed_at + _RETRY_AFTER_FAILED_READ_S - time.monotonic()
            if wait > 0:
                raise redis.ConnectionError(f"slot map unreadable; next read in {wait:.2f} s")
        self._begin_read()

        async def read() -> None:
            await asyncio.to_thread(self._read_map, moved)
            self._map_read(moved)

        task = self._refreshing = loop.create_task(read())
        task.add_done_callback(_retrieve)  # a read nobody awaited (``_refresh_soon``) logs nothing at exit
        return task

    def _refresh_soon(self) -> None:
        """Start a slot-map read without waiting for it (the map may be stale after a timeout), unless one is in
        flight or the last one failed less than ``_RETRY_AFTER_FAILED_READ_S`` ago.

        Not awaited: a master stalled past the deadline would stall the read too (its ``CLUSTER SLOTS``), and the
        requests to the other masters go on meanwhile on the map they have. A master that died silently only ever
        times out, and this read is how the reader learns the map the Cluster made without it.
        """
        with contextlib.suppress(redis.ConnectionError):
            self._refresh()

    async def _after_failure(
        self, generation: int, moved: tuple[redis.exceptions.MovedError, ...] = ()
    ) -> None:
        """After a request's attempt that began at ``generation`` met a stale map: read it again, at most once.

        A failover fails every in-flight request at once; the first to get here starts the read and the others
        await the same one. A request that joined a read in flight follows its own MOVED targets after it, unless
        yet another read began meanwhile; one whose attempt predates a read already finished does not (its replies
        may be older than that map) and retries on that map. When the map cannot be read (the read fails, or one
        failed less than ``_RETRY_AFTER_FAILED_READ_S`` ago) the request still follows its own MOVED targets, which
        need no round trip (as redis-py's client does on a MOVED): while one shard's slots are uncovered, every read
        fails, and a healthy shard's request answered MOVED was a 503. Without a MOVED to follow it raises
        ``redis.ConnectionError``.
        """
        task = self._refreshing
        try:
            if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
                joined = self._generation
                # One request's cancellation must not cancel the read the others await.
                await asyncio.shield(task)
                if self._generation == joined:
                    self._follow(moved)
            elif generation == self._generation:
                await asyncio.shield(self._refresh(moved))
        except redis.ConnectionError:
            if not moved:
                raise
            self._follow(moved)

    def current(self) -> VersionState:
        """The live version's state, loading it if the live pointer moved (readiness and start).

        Blocking (redis-py's client): called at start, by /readyz (in a worker thread) and by a first request before
        any version is held. A stale slot map is read again off the loop (``_refresh_soon``): scheduled on the loop
        the reader serves on when called from another thread, read here only before any request (no loop yet).
        """
        running = _running_loop()
        if running is not None:  # start under uvicorn's lifespan, or a request: the loop that serves
            self._loop = running
        if self._stale:
            if running is not None:
                self._refresh_soon()
            elif self._loop is not None and self._loop.is_running():  # /readyz's worker thread
                self._loop.call_soon_threadsafe(self._refresh_soon)
            else:  # no loop serves yet
                self.refresh_topology()
        try:
            live = cast("bytes | None", self.cluster.get(self.pointer))
        except RedisClusterException as exc:
            raise redis.ConnectionError(f"cluster: {exc}") from exc
        if live is None:
            raise NoLiveVersionError(f"{self.pointer} names no feature version")
        name = live.decode()
        held = self.held
        if held is None or held.keys.version != name:
            return self.load(name)
        # A state of ``held`` itself: ``self.state`` is written by requests, and may for a moment name another.
        return held.states.get(held.copies[0]) or self._load_copy(held, held.copies[0])

    # -- the hot path --------------------------------------------------------------------------------------------
    async def fetch(self, user_id: int, select: SelectFn) -> Fetched:
        """The user and the selected candidates from the user's master, all of one version; see the module doc.

        The round trip is awaited on the node's pipelined connection: the event loop serves other requests
        meanwhile. Each attempt uses the version held when it began (a reload by another request never mixes
        versions in this one: the MGET's pointer copy is checked against it).
        """
        self._loop = asyncio.get_running_loop()
        if self._stale:
            self._refresh_soon()
        if self.held is None:
            self.current()
        reconnected = False
        split: set[str] = set()  # the copies answered TRYAGAIN in this request
        # Why the last attempt did not answer (each sets it): what the request raises when it has none left.
        failure: Exception | None = None
        for _ in range(_MAX_ATTEMPTS):
            generation = self._generation
            held = cast("_Held", self.held)
            user_key = held.keys.user(user_id)
            user_node = self._node(key_slot(user_key.encode()))
            copy = held.copy_of_node.get(user_node.name, held.copies[0])
            if split:  # a migration split a copy in this request: another master's (``_copy_for``)
                copy = self._copy_for(held, copy, split)
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
                replies = await self._round_trips(plan, generation)
                # type(), not isinstance: redis-py's MovedError is a subclass of AskError
                asked = {c: r for c, r in replies.items() if type(r) is redis.exceptions.AskError}
                if asked:  # a slot being migrated whose key has left: ask the importing node, once
                    replies.update(await self._asked(asked, generation))
            except redis.ConnectionError as exc:
                # Once per request: a node closed an idle connection (a demoted master does), or the node is gone
                # and a new slot map names its successor. A timeout is not retried (it would double the deadline).
                if reconnected:
                    raise
                reconnected = True
                failure = redis.ConnectionError(f"connection lost on the request's last attempt: {exc}")
                failure.__cause__ = exc
                await self._after_failure(generation)
                continue
            tryagain = [r for r in replies.values() if isinstance(r, redis.exceptions.TryAgainError)]
            moved = [r for r in replies.values() if isinstance(r, _TOPOLOGY_ERRORS)]
            if tryagain or moved:
                # The reply as the node sent it: redis-py's parser strips its code (MOVED, TRYAGAIN, …) off the text.
                reply = (tryagain or moved)[0]
                failure = redis.ConnectionError(
                    f"the Cluster redirected the request's last attempt: {reply.status_code} {reply}"
                )
                if tryagain and copy:
                    split.add(copy)
                if moved:  # followed in this attempt, even beside a TRYAGAIN: the next attempt meets neither
                    await self._after_failure(
                        generation, tuple(r for r in moved if isinstance(r, redis.exceptions.MovedError))
                    )
                elif self._copy_for(held, copy, split) == copy:  # no other copy: the migration goes on
                    await asyncio.sleep(_TRYAGAIN_S)
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
                if self.held is None or self.held.keys.version != live.decode():
                    self.load(live.decode())  # not already reloaded by a concurrent request
            elif (values[1] or b"") != state.revision:
                if held.states.get(copy) is state:  # not already reloaded by a concurrent request
                    self._load_copy(held, copy)
            else:
                user = user_features(user_id, raw_user)
                return Fetched(keys.version, state.meta.feature_schema_hash, user, ids, values[2:])
            failure = NoLiveVersionError("feature version kept changing during the request")
        raise cast("Exception", failure)

    @staticmethod
    def _copy_for(held: _Held, own: str, split: Collection[str]) -> str:
        """The copy a request reads instead of ``own`` (its user's, else the first) when ``own`` is in ``split``: the
        copies answered TRYAGAIN in this request, whose keys a migration split for as long as the migration of their
        slot lasts (seconds for a large slot, longer than the request's three attempts).

        The first copy in the version's list on a master that holds no split copy: it holds the same version's same
        values, so the answer is the same. Deterministic, and no map read. With none left, ``own`` again.
        """
        if own not in split:
            return own
        # ``split`` may name a copy of a version held earlier in the request: it has no node here.
        masters = {node.name for c in split if (node := held.node_of_copy.get(c)) is not None}
        return next(
            (
                c
                for c in held.copies
                if c not in split
                and (node := held.node_of_copy.get(c)) is not None
                and node.name not in masters
            ),
            own,
        )

    async def _asked(
        self, asked: dict[Command, redis.exceptions.AskError], generation: int
    ) -> dict[Command, Any]:
        """Each command answered ASK, sent again to the node the reply names, after ASKING, as the Cluster
        specification says (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/, "ASK
        redirection"); the slot map is left as it is (the slot moves only when the migration ends).

        ASKING holds for the connection's next command only: ``execute_all`` writes a node's commands together, in
        order, so no other request's command comes between the two.
        """
        plan: Plan = {}
        manager = self.cluster.nodes_manager
        for command, reply in asked.items():
            node = manager.get_node(host=reply.host, port=reply.port)
            if node is None:  # a node the last map read did not name
                node = ClusterNode(reply.host, reply.port, PRIMARY)  # type: ignore[no-untyped-call]
            self._add(plan, node, ("ASKING",))
            self._add(plan, node, command)
        replies = await self._round_trips(plan, generation)
        return {command: replies[command] for command in asked}

    @staticmethod
    def _add(plan: Plan, node: ClusterNode, command: Command) -> None:
        plan.setdefault(node.name, (node, []))[1].append(command)

    async def _round_trips(self, plan: Plan, generation: int) -> dict[Command, Any]:
        """``round_trips`` on this worker's connections; a lost connection or a timeout marks the slot map stale
        unless it was read again since the attempt began."""
        try:
            return await round_trips(plan, self.pipes)
        except (redis.ConnectionError, redis.TimeoutError):
            if generation == self._generation:
                self._stale = True  # a node failed or stalled: the slot map may be stale
            raise


async def round_trips(plan: Plan, pipes: NodePipes) -> dict[Command, Any]:
    """Each node's commands in one write on its pipelined connection, the nodes concurrently; replies by command.

    A reply that is an error comes back as the exception object (``PipelinedRedis.execute_all``), so the caller can
    tell a moved slot from a real failure; a lost connection or a timeout is raised.
    """
    # hiredis's packer directly: 16.8 µs for a request's two commands against 56 µs through redis-py 8.1's
    # Connection.pack_commands, which inspects every argument in Python first (a micro-measurement of 20,000
    # rounds on the shared 2-core VM, 2026-12-05).
    sends = [
        (commands, pipes.get(node).execute_all([pack_command(c) for c in commands]))
        for node, commands in plan.values()
    ]
    if len(sends) == 1:  # the common case: one node, no tasks to gather
        batches = [await sends[0][1]]
    else:
        batches = await asyncio.gather(*(send for _, send in sends))
    replies: dict[Command, Any] = {}
    for (commands, _), batch in zip(sends, batches, strict=True):
        replies.update(zip(commands, batch, strict=True))
    return replies


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a finished read's exception retrieved (its awaiters, if any, got it raised)."""
    if not task.cancelled():
        task.exception()
