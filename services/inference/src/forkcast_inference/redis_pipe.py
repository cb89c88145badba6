"""One asyncio connection to Redis on which concurrent requests' commands are pipelined (replies come in order).

Why: a blocking call per request puts the worker to sleep until Redis answers, and every sleep and wake-up is CPU
(measured in-process on full data, 2026-12-05, machine loaded by other agents: 235-253 µs CPU per request with the
reads answered from memory, 353-424 µs with the blocking MGET). Here a request writes its pre-encoded command and
awaits a future; the event loop serves other requests meanwhile, and one ``data_received`` resolves every reply that
arrived (RESP parsed by hiredis, as redis-py does). Redis answers commands of one connection in order
(https://redis.io/docs/latest/develop/use/pipelining/), so replies are matched to futures first in, first out.

Failure: a reply not back within ``timeout_s`` or a lost connection fails every waiting request with a
``redis.RedisError`` (the app's 503) and closes the connection; the next request connects again. AUTH (user and
password from the URL, as the per-service ACL users need) and SELECT (db ≠ 0) are pipelined ahead of the first
command, so they cost no extra round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import hiredis
import redis
from redis.connection import parse_url


class _Connection(asyncio.Protocol):
    """One TCP connection: the replies it receives resolve its waiting futures, first in, first out."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while waiting:
            reply = reader.gets()
            if reply is False:
                return
            future = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"connection to Redis lost: {exc}"))

    def send(self, packed: bytes, future: asyncio.Future[Any]) -> None:
        assert self.transport is not None
        self.waiting.append(future)
        self.transport.write(packed)

    def fail(self, error: Exception) -> None:
        self.lost = True
        transport, self.transport = self.transport, None
        if transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is closed already (one asyncio.run per test)
                transport.abort()
        waiting, self.waiting = self.waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
                future.exception()  # a waiter that timed out is gone: mark it retrieved


class RedisPipe:
    """``await pipe.call(packed)`` → the reply of the one command in ``packed`` (a RESP array, pre-encoded)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        params = parse_url(url)  # type: ignore[no-untyped-call]
        self.host: str = params.get("host", "127.0.0.1")
        self.port: int = int(params.get("port", 6379))
        self.timeout_s = timeout_s
        hello: list[bytes] = []
        if params.get("password"):
            auth = [b"AUTH", *([params["username"].encode()] if params.get("username") else [])]
            hello.append(hiredis.pack_command((*auth, params["password"].encode())))
        if int(params.get("db", 0)):
            hello.append(hiredis.pack_command((b"SELECT", str(params["db"]).encode())))  # type: ignore[arg-type]
        self.hello = hello
        self._conn: _Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` and await its reply; an error reply is raised as ``redis.ResponseError``."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or conn.lost or self._loop is not loop:
            conn = await self._connect(loop)
        future: asyncio.Future[Any] = loop.create_future()
        conn.send(packed, future)
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await future
        except TimeoutError:
            conn.fail(redis.TimeoutError("closed after a reply timed out"))
            raise redis.TimeoutError(
                f"no reply from {self.host}:{self.port} within {self.timeout_s} s"
            ) from None
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self._connecting is not None and self._loop is loop:
            return await asyncio.shield(self._connecting)  # another request is connecting: share it
        self.close()
        self._loop = loop
        self._connecting = connecting = loop.create_future()
        conn = _Connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                await loop.create_connection(lambda: conn, self.host, self.port)
                hello = [loop.create_future() for _ in self.hello]
                for packed, future in zip(self.hello, hello, strict=True):
                    conn.send(packed, future)
                for reply in await asyncio.gather(*hello):
                    if isinstance(reply, redis.ResponseError):
                        raise reply
        except (OSError, TimeoutError, redis.RedisError) as exc:
            conn.fail(redis.ConnectionError("connect failed"))
            error = redis.ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc!r}")
            connecting.set_exception(error)
            connecting.exception()  # retrieved: waiters get it through the shield
            self._connecting = None
            raise error from exc
        self._conn, self._connecting = conn, None
        connecting.set_result(conn)
        return conn

    def close(self) -> None:
        """Drop the connection; waiting requests fail, the next call connects again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(redis.ConnectionError(f"connection to {self.host}:{self.port} closed"))
