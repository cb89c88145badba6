"""One asyncio Redis connection per worker that pipelines the concurrent requests' commands (issue 19.3).

Why: the worker's event loop used to wait on a blocking MGET per request, so the loop did nothing else during the
round trip; in-process over 2,000 real requests that cost 353-424 µs of CPU per request against 235-253 µs with
the reads answered from memory (services/inference/BENCHMARKS.md, "19.3"). Here each request writes its
pre-encoded command (``MgetWire``) for one shared transport and awaits a future; the commands of one event-loop
iteration are written together at the next (one send() for the requests the loop took in together: in-process,
16 concurrent requests cost ≈ 60 µs of CPU less each than with a write per command, 2026-12-05); replies are parsed
by hiredis and matched to the waiting requests in order (Redis answers a connection's commands in the order sent:
https://redis.io/docs/latest/develop/use/pipelining/), so concurrent requests share round trips and socket calls.
Measured, same-run A/B alternated over 4 rounds at 16 connections (2026-12-05, loaded 2-core VM, BENCHMARKS.md):
service 454-500 → 383-424 µs of CPU per request; the floor server 92-122 → 62-71 µs.

Why not redis-py's asyncio client (not measured here): it takes a pooled connection per command and packs the
arguments in Python; the commands here are already RESP bytes, so all that is needed is a transport, a parser and a
queue.

The Cluster reader (forkcast_inference.cluster_features) holds one per node and sends a request's commands for
that node together with ``execute_all``, which hands error replies back as redis-py's exception objects (MOVED, ASK,
CLUSTERDOWN, TRYAGAIN told apart) instead of raising.

Failure: a reply not received within ``timeout_s`` of its command, or a lost connection, fails EVERY waiting
request with the same ``redis.TimeoutError`` / ``redis.ConnectionError`` (their replies can no longer be matched)
and drops the connection; the next command connects again, authenticating with the URL's ACL user and password.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis
from hiredis import pack_command

# redis-py's own reply-error mapper (MOVED → MovedError, ASK, CLUSTERDOWN, TRYAGAIN, NOPERM, …), the one its
# connections use: private, so its behaviour is pinned by test_pipelined_redis.py against a real Cluster node.
from redis._parsers import BaseParser

# A reply error (an ACL refusal, a wrong type) comes back as this exception object, not raised by the parser.
_REPLY_ERROR = redis.ResponseError


class _RespProtocol(asyncio.Protocol):
    """The transport's receiving end: feeds hiredis and resolves the waiting futures first-in, first-out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, timeout_s: float) -> None:
        self.loop = loop
        self.where = where
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader(replyError=_REPLY_ERROR)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.usable = False
        self._timer: asyncio.TimerHandle | None = None
        # Commands sent during one loop iteration, written together by ``_write`` at the next one (one send()
        # system call for the concurrent requests instead of one each).
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.usable = True

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one command; the future resolves to its reply (an error reply as a ``ResponseError`` object)."""
        fut = self.loop.create_future()
        deadline = self.loop.time() + self.timeout_s
        self.waiting.append((fut, deadline))
        if not self._out:
            self.loop.call_soon(self._write)
        self._out.append(packed)
        if self._timer is None:
            # One timer for the whole queue, set for the oldest command's deadline (not one per request).
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        return fut

    def _write(self) -> None:
        out, self._out = self._out, []
        if self.usable and self.transport is not None and out:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                fut, _ = self.waiting.popleft()
                if not fut.done():  # a request cancelled meanwhile still had its reply in the stream
                    fut.set_result(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(redis.ConnectionError(f"Redis at {self.where}: unparseable reply stream ({exc})"))

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1]
        if self.loop.time() >= deadline:
            self._fail(
                redis.TimeoutError(
                    f"Redis at {self.where} did not answer within {self.timeout_s} s"
                    f" ({len(self.waiting)} pipelined requests failed)"
                )
            )
        else:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            redis.ConnectionError(f"connection to Redis at {self.where} lost: {exc or 'closed by server'}")
        )

    def _fail(self, error: redis.RedisError) -> None:
        """Fail every waiting command with ``error`` and drop the connection (later replies cannot be matched)."""
        self.usable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out = []  # not written yet: their futures fail below with the others
        waiting, self.waiting = self.waiting, deque()
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class PipelinedRedis:
    """A worker's shared pipelined connection: ``await execute(packed)`` → the reply, or raises ``RedisError``.

    Made from a redis-py client's connection settings (``connection_pool.connection_kwargs``: host/port or unix
    path, ACL user, password, db), so it reaches the same server as the same user as the rest of the service.
    Bound to the running event loop; a command from another loop (a test's ``asyncio.run`` per request) connects
    afresh.
    """

    def __init__(self, client: redis.Redis, timeout_s: float) -> None:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if issubclass(pool.connection_class, redis.SSLConnection):
            raise ValueError("the pipelined feature reader does not support TLS (rediss://) URLs")
        self.path: str | None = kwargs.get("path")
        self.host: str = kwargs.get("host", "localhost")
        self.port: int = int(kwargs.get("port", 6379))
        self.where = self.path or f"{self.host}:{self.port}"
        self.username: str | None = kwargs.get("username")
        self.password: str | None = kwargs.get("password")
        self.db = int(kwargs.get("db", 0) or 0)
        self.timeout_s = timeout_s
        self.connects = 0  # connections opened so far (tests read it)
        self.closed = False  # set by ``close``: this object never connects again
        self._proto: _RespProtocol | None = None
        self._opening: asyncio.Task[_RespProtocol] | None = None

    async def execute(self, packed: bytes) -> Any:
        """Send one pre-encoded command and await its reply; an error reply is raised as ``ResponseError``."""
        proto = self._proto
        if proto is None or not proto.usable or proto.loop is not asyncio.get_running_loop():
            proto = await self._connection()
        reply = await proto.send(packed)
        if isinstance(reply, _REPLY_ERROR):
            raise reply
        return reply

    async def execute_all(self, commands: Sequence[bytes]) -> list[Any]:
        """Send pre-encoded ``commands`` in one write and await all their replies, in order.

        An error reply is returned, not raised, as the exception object redis-py's own parser makes of it
        (``MovedError``, ``AskError``, ``ClusterDownError``, ``TryAgainError``, else a ``ResponseError``), as in a
        redis-py pipeline: the Cluster reader tells a moved slot from a real failure by it. A lost connection or a
        missed deadline raises ``redis.ConnectionError`` / ``redis.TimeoutError``, as ``execute`` does.
        """
        proto = self._proto
        if proto is None or not proto.usable or proto.loop is not asyncio.get_running_loop():
            proto = await self._connection()
        futures = [proto.send(packed) for packed in commands]
        try:
            # Redis answers a connection's commands in order and the protocol resolves them in order (or fails
            # them all at once): when the last reply is in, so are the others.
            await futures[-1]
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()  # this request was cancelled: its replies are dropped as they arrive
                elif not fut.cancelled():
                    fut.exception()  # the error all of them share is raised once, from the last one
        return [
            BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
            if isinstance(reply, _REPLY_ERROR)
            else reply
            for reply in (fut.result() for fut in futures)
        ]

    def close(self) -> None:
        """Drop the connection (its node left the Cluster's slot map): waiting commands fail with ConnectionError, and
        so does every later one (the object never connects again).

        On the loop that opened it only; a connection of a loop already closed is left to be collected.
        """
        self.closed = True
        proto = self._proto
        self._proto = None
        if proto is not None and not proto.loop.is_closed():
            proto._fail(self._left_the_map())
        # A connect in flight is cancelled too (its half-open socket is aborted in ``_open``): finishing it would
        # hand a socket to an object nobody holds any more. Its waiters get a ConnectionError (``_connection``).
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done() and not opening.get_loop().is_closed():
            opening.cancel()

    def _left_the_map(self) -> redis.ConnectionError:
        """What a command on a closed connection fails with (``close``)."""
        return redis.ConnectionError(f"connection to Redis at {self.where} closed: node left the slot map")

    async def _connection(self) -> _RespProtocol:
        if self.closed:
            # A request that took this connection before its node left the map: connecting again would leave a
            # socket on an object nobody holds (found in review).
            raise self._left_the_map()
        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is None or opening.get_loop() is not loop or opening.done():
            old = self._proto
            if old is not None and old.loop is not loop and not old.loop.is_closed() and old.transport:
                old.transport.abort()
            opening = self._opening = loop.create_task(self._open_checked(loop))
        try:
            # Shielded: one request's cancellation must not cancel the connect the others wait on.
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and not (task is not None and task.cancelling()):
                # ``close`` cancelled the connect, not this request's caller.
                raise self._left_the_map() from None
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _RespProtocol:
        proto: _RespProtocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.path:
                    _, proto = await loop.create_unix_connection(
                        lambda: _RespProtocol(loop, self.where, self.timeout_s), self.path
                    )
                else:
                    _, proto = await loop.create_connection(
                        lambda: _RespProtocol(loop, self.where, self.timeout_s), self.host, self.port
                    )
                self.connects += 1
                await self._handshake(proto)
        except BaseException:
            if proto is not None and proto.transport is not None:
                proto.transport.abort()  # a half-open connection (the handshake failed or timed out)
            raise
        self._proto = proto
        return proto

    async def _open_checked(self, loop: asyncio.AbstractEventLoop) -> _RespProtocol:
        try:
            return await self._open(loop)
        except TimeoutError as exc:
            raise redis.TimeoutError(f"connecting to Redis at {self.where} timed out") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis at {self.where}: {exc}") from exc

    async def _handshake(self, proto: _RespProtocol) -> None:
        """AUTH as the URL's ACL user (https://redis.io/docs/latest/commands/auth/) and SELECT its db, pipelined."""
        replies = []
        if self.password is not None:
            # typed as Any: hiredis's stub declares a one-element tuple
            auth: tuple[Any, ...] = (
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
            replies.append(("AUTH", proto.send(pack_command(auth))))
        if self.db:
            replies.append(("SELECT", proto.send(pack_command(cast("Any", ("SELECT", self.db))))))
        for name, fut in replies:
            reply = await fut
            if isinstance(reply, _REPLY_ERROR):
                proto._fail(redis.ConnectionError("handshake refused"))
                if name == "AUTH":
                    raise redis.AuthenticationError(
                        f"Redis at {self.where} refused AUTH as user {self.username or 'default'}: {reply}"
                    )
                raise redis.ConnectionError(f"Redis at {self.where} refused SELECT {self.db}: {reply}")
