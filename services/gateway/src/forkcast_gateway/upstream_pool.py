"""HTTP/1.1 keep-alive connections to the inference endpoints: asyncio protocols parsed by httptools, pooled per
endpoint — the gateway's only upstream client on the /recommend hot path.

Why not aiohttp's ClientSession (which the gateway used until 2026-12-05): per forwarded request it builds a
ClientRequest, a yarl URL, two CIMultiDicts of headers, a timer context, a StreamReader and a ClientResponse.
Measured on the 2-core VM with benchmarks/bench_upstream_client.py (16 concurrent requests of an 8,074-byte body to
one loopback upstream answering 1.6 KB, client CPU per request): the figures are in the docstring of
:class:`Pool`. httptools (the parser of uvicorn's server protocol, a declared dependency) does the HTTP
parsing; what is written here is the pooling, the timeouts and the mapping of failures, which the forwarder needs
anyway to tell "nothing reached the upstream" (retry elsewhere) from "it timed out" (503) — :class:`ConnectFailed`
and :class:`TimeoutError`, as aiohttp's ClientOSError/ServerDisconnectedError and its timeouts did.

Requests are written whole with one ``transport.write``; a response is complete at httptools' on_message_complete
(Content-Length or chunked, both handled by httptools). A connection goes back to its endpoint's idle list only
after a complete response that allows keep-alive; one that the server closed while idle (uvicorn closes idle
keep-alive connections after 5 s) leaves the list at once through ``connection_lost``. The one race left, the
server closing a connection just as a request is written on it, shows as :class:`ConnectFailed` (nothing was
answered), which the forwarder retries once on another endpoint, as it did with aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Iterable

import httptools

# Responses larger than this are refused (the inference answers ~1-6 KB: top-k of ≤ 1,000 candidates).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ConnectFailed(OSError):  # noqa: N818 — names the condition, as ConnectionRefusedError does
    """Nothing was answered: connect refused or timed out, or the connection was reset or closed before a response.
    Safe to send again elsewhere (the forwarder's one retry)."""


class ProtocolError(Exception):
    """The upstream answered something that is not a valid HTTP/1.1 response."""


class Response:
    """Status, the wanted headers (lower-case name → value) and the body of one upstream answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self, wanted: frozenset[bytes]) -> None:
        self.wanted = wanted
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._header_name = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectFailed(f"connection closed before a complete response ({exc or 'EOF'})"))

    # -- httptools callbacks -------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers, self._body, self._size = {}, [], 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may split a name or value across reads; these headers are short and arrive in one read in
        # practice, but a split one is joined rather than lost.
        lower = name.lower()
        if lower in self.wanted:
            self._headers[lower] = self._headers.get(lower, b"") + value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(ProtocolError(f"response body over {MAX_RESPONSE_BYTES} bytes"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        self.waiter = None
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result(Response(self.parser.get_status_code(), self._headers, body))

    # -- use -----------------------------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes, waiter: asyncio.Future[Response]) -> None:
        assert self.transport is not None
        self.waiter = waiter
        self.transport.write(request)


class Pool:
    """Keep-alive connections to one endpoint (``host``, ``port``), shared by every request to it.

    Client CPU per request, 16 in flight, 8,074-byte request body, 1.6 KB answer, loopback, benchmarks/
    bench_upstream_client.py on the 2-core VM, 2026-12-05 (other agents loading the machine): aiohttp
    ClientSession 97.6 µs, this pool 22.7 µs (4.3× less; 6,771 vs 11,764 req/s, best of 3 rounds each).
    """

    def __init__(
        self,
        host: str,
        port: int,
        wanted: Iterable[str],
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = 30.0,
    ) -> None:
        self.host, self.port, self.limit, self.keepalive_s = host, port, limit, keepalive_s
        self.ssl_context = ssl_context
        # The Host header (RFC 9112 §3.2): the port only when it is not the scheme's default, IPv6 in brackets.
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == (443 if ssl_context else 80) else f"{name}:{port}"
        self.wanted = frozenset(h.lower().encode() for h in wanted)
        self.idle: deque[_Connection] = deque()
        self.open: set[_Connection] = set()
        self.connecting = 0  # connects under way (they count against ``limit``)
        self.draining = False  # set by drain()/close(): no connection goes back to ``idle``
        # Requests waiting for a connection while ``limit`` are open and busy, first come first served.
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def _connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self.wanted),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                )
        except TimeoutError:
            raise ConnectFailed(f"connect to {self.host}:{self.port} timed out after {timeout_s} s") from None
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        # uvloop may call connection_made after create_connection returns: take the transport from its result.
        conn.transport = transport
        self.open.add(conn)
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the likeliest to be alive and warm
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
            self.open.discard(conn)
        return None

    async def _acquire(self, connect_timeout_s: float, deadline: float) -> _Connection:
        """An idle connection, a new one while fewer than ``limit`` are open, else the next one released."""
        loop = asyncio.get_running_loop()
        while True:
            conn = self._take_idle()
            if conn is not None:
                return conn
            if len(self.open) + self.connecting < self.limit:
                self.connecting += 1  # counted before the await: concurrent callers see the slot taken
                try:
                    return await self._connect(min(connect_timeout_s, max(0.0, deadline - loop.time())))
                except BaseException:
                    self._wake_one()  # the slot is free again: a waiter may try to connect
                    raise
                finally:
                    self.connecting -= 1
            handoff: asyncio.Future[_Connection | None] = loop.create_future()
            self.waiters.append(handoff)
            try:
                async with asyncio.timeout_at(deadline):
                    given = await handoff
            except BaseException:
                if handoff.done() and not handoff.cancelled() and (late := handoff.result()) is not None:
                    self._release(late)  # handed over just as the deadline passed: pass it on, do not leak it
                handoff.cancel()
                raise
            if given is not None:
                return given
            # None: a connection closed, so a new one may be opened; go round again.

    def _wake_one(self) -> None:
        while self.waiters:
            handoff = self.waiters.popleft()
            if not handoff.done():
                handoff.set_result(None)
                return

    def _release(self, conn: _Connection) -> None:
        """Hand ``conn`` to the first waiter, else keep it idle; a closed one frees a slot for a waiter."""
        if self.draining:
            conn.close()
        if conn.closed:
            self.open.discard(conn)
        while self.waiters:
            handoff = self.waiters.popleft()
            if not handoff.done():
                handoff.set_result(None if conn.closed else conn)
                return
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)

    async def request(self, request: bytes, connect_timeout_s: float, deadline: float) -> Response:
        """Send ``request`` (a whole HTTP/1.1 request) and return the response; ``deadline`` is loop time.

        Raises ConnectFailed (nothing answered: retry elsewhere), TimeoutError (past ``deadline``: not retried,
        the upstream may be working on it) or ProtocolError.
        """
        loop = asyncio.get_running_loop()
        conn = await self._acquire(connect_timeout_s, deadline)
        waiter: asyncio.Future[Response] = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            conn.send(request, waiter)
            response = await waiter
        except BaseException:
            # Timed out, cancelled or failed mid-response: the connection's state is unknown, so it is not reused.
            conn.close()
            raise
        finally:
            timer.cancel()
            self._release(conn)
        return response

    def drain(self) -> None:
        """Close the idle connections now and each busy one when its answer is in (an endpoint DNS dropped: a
        terminating pod still finishes what it was sent)."""
        self.draining = True
        while self.idle:
            conn = self.idle.pop()
            conn.close()
            self.open.discard(conn)

    def close(self) -> None:
        """Close every connection now, busy ones too (shutdown)."""
        self.draining = True
        for conn in list(self.open):
            conn.close()
        self.open.clear()
        self.idle.clear()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
