"""upstream_pool.Pool against scripted asyncio servers on loopback: keep-alive reuse, the connection limit, and the
three failure kinds the forwarder tells apart (ConnectFailed → retried elsewhere, TimeoutError → 503, ProtocolError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from forkcast_devservers.ports import free_port
from forkcast_gateway.upstream_pool import ConnectFailed, Pool, ProtocolError

REQUEST = b"POST /recommend/u1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-model-version: m7\r\ncontent-length: 2\r\n\r\n{}"
)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def answering(*replies: bytes, delay_s: float = 0.0, then_close: bool = False) -> tuple[Handler, list[int]]:
    """A handler that answers each request on a connection with the next of ``replies`` (the last repeats);
    the list counts connections accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        n = 0
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(delay_s)
                writer.write(replies[min(n, len(replies) - 1)])
                await writer.drain()
                n += 1
                if then_close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return handle, accepted


async def serving(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def pool(port: int, limit: int = 4) -> Pool:
    return Pool("127.0.0.1", port, ["x-model-version"], limit)


def test_keep_alive_connection_is_reused_and_headers_and_body_come_back() -> None:
    async def run() -> None:
        handler, accepted = answering(OK)
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        for _ in range(5):
            r = await p.request(REQUEST, 1.0, loop.time() + 2)
            assert (r.status, r.body, r.headers) == (200, b"{}", {b"x-model-version": b"m7"})
        assert len(accepted) == 1, "each request opened a connection of its own"
        p.close()
        server.close()

    asyncio.run(run())


def test_chunked_answer_is_joined_and_connection_close_is_not_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    )

    async def run() -> None:
        handler, accepted = answering(chunked, then_close=True)
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        assert (await p.request(REQUEST, 1.0, loop.time() + 2)).body == b'{"a":1}'
        assert (await p.request(REQUEST, 1.0, loop.time() + 2)).body == b'{"a":1}'
        assert len(accepted) == 2, "a connection the server closed (connection: close) was used again"
        assert not p.idle
        server.close()

    asyncio.run(run())


def test_limit_makes_requests_wait_for_a_connection() -> None:
    async def run() -> None:
        handler, accepted = answering(OK, delay_s=0.05)
        server, port = await serving(handler)
        p, loop = pool(port, limit=2), asyncio.get_running_loop()
        replies = await asyncio.gather(*(p.request(REQUEST, 1.0, loop.time() + 5) for _ in range(8)))
        assert [r.status for r in replies] == [200] * 8
        assert len(accepted) == 2, f"{len(accepted)} connections opened with a limit of 2"
        server.close()

    asyncio.run(run())


def test_refused_connect_is_connect_failed() -> None:
    async def run() -> None:
        p, loop = pool(free_port()), asyncio.get_running_loop()
        with pytest.raises(ConnectFailed, match=r"connect to 127\.0\.0\.1"):
            await p.request(REQUEST, 1.0, loop.time() + 2)

    asyncio.run(run())


def test_close_before_an_answer_is_connect_failed() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def run() -> None:
        server, port = await serving(hang_up)
        p, loop = pool(port), asyncio.get_running_loop()
        with pytest.raises(ConnectFailed, match="closed before a complete response"):
            await p.request(REQUEST, 1.0, loop.time() + 2)
        server.close()

    asyncio.run(run())


def test_slow_answer_times_out_at_the_deadline_and_the_connection_is_dropped() -> None:
    async def run() -> None:
        handler, _ = answering(OK, delay_s=10.0)
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await p.request(REQUEST, 5.0, t0 + 0.1)
        # Cut at the 0.1 s deadline, not at the 5 s connect timeout or the 10 s answer: 2 s between them leaves a
        # starved CI machine room (0.5 s against a 1 s connect timeout was too close).
        assert loop.time() - t0 < 2.0
        assert not p.idle and not p.open, "a connection with an answer still due went back to the pool"
        server.close()

    asyncio.run(run())


def test_garbage_answer_is_protocol_error() -> None:
    async def run() -> None:
        handler, _ = answering(b"SMTP ready\r\n\r\n")
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        with pytest.raises(ProtocolError, match="invalid HTTP response"):
            await p.request(REQUEST, 1.0, loop.time() + 2)
        server.close()

    asyncio.run(run())


def test_connection_closed_while_idle_is_not_handed_out() -> None:
    async def run() -> None:
        handler, accepted = answering(OK, then_close=True)
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        await p.request(REQUEST, 1.0, loop.time() + 2)
        await asyncio.sleep(0.05)  # the server's close reaches the client
        r = await p.request(REQUEST, 1.0, loop.time() + 2)
        assert r.status == 200 and len(accepted) == 2
        server.close()

    asyncio.run(run())


def test_drain_lets_the_request_in_flight_finish_then_closes_its_connection() -> None:
    async def run() -> None:
        handler, _ = answering(OK, delay_s=0.1)
        server, port = await serving(handler)
        p, loop = pool(port), asyncio.get_running_loop()
        await p.request(REQUEST, 1.0, loop.time() + 2)  # one idle connection
        busy = asyncio.create_task(p.request(REQUEST, 1.0, loop.time() + 2))
        await asyncio.sleep(0.02)  # the busy request has taken the one connection
        assert len(p.open) == 1 and not p.idle
        p.drain()
        assert (await busy).status == 200, "drain cut off a request in flight"
        assert not p.idle and not p.open, "a drained pool kept a connection"
        server.close()

    asyncio.run(run())
