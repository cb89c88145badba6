"""What the header-section bounds (forkcast_gateway.header_bounds) cost per request.

Feeds the same keep-alive ``POST /recommend`` (the dataset's shape: 1,000 candidate ids, ≈ 8 KB of body, the
gateway's usual headers) to uvicorn's httptools protocol and to HeaderBoundedProtocol on a uvloop loop with an
in-memory transport and a trivial ASGI app, one request at a time, and times ``data_received`` (where every
addition runs: the byte count, the parser callbacks, the deadline's timestamp); the loop then runs the ASGI task to
its response, untimed. Prints µs per request for each and the difference; repeats alternate so both see the same
noise.

    python services/gateway/benchmarks/bench_header_bounds.py [--requests 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from forkcast_gateway.header_bounds import bounded_protocol


class MemoryTransport(asyncio.Transport):
    """Takes what the protocol writes and drops it; never closes unless asked."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def request() -> bytes:
    body = json.dumps(
        {"candidate_restaurant_ids": list(range(1000, 2000)), "latitude": 13.75, "longitude": 100.5}
    ).encode()
    head = (
        "POST /recommend/u00042 HTTP/1.1\r\nHost: gateway:8000\r\nUser-Agent: python-requests/2.32\r\n"
        "Accept: */*\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
        f"X-API-Key: k-user-secret-0001\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def run(cls: type[HttpToolsProtocol], loop: asyncio.AbstractEventLoop, data: bytes, n: int) -> float:
    """µs per request spent in ``data_received`` (parsing, the parser callbacks, starting the ASGI task): ``n``
    requests on one keep-alive connection, the loop run to each response between them (not timed)."""
    config = Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    proto: Any = cls(config, ServerState(), {}, _loop=loop)
    transport = MemoryTransport()
    proto.connection_made(transport)
    elapsed = 0.0
    for _ in range(n):
        started = time.perf_counter()
        proto.data_received(data)
        elapsed += time.perf_counter() - started
        while not proto.cycle.response_complete:
            loop.run_until_complete(asyncio.sleep(0))
    assert not transport.closing and transport.written > 0
    proto.connection_lost(None)
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000, help="requests per measurement")
    p.add_argument("--repeats", type=int, default=7, help="alternating measurements of each protocol")
    args = p.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    data = request()
    bounded = bounded_protocol(32 * 1024, 5.0)
    base_us, bounded_us = [], []
    for _ in range(args.repeats):
        base_us.append(run(HttpToolsProtocol, loop, data, args.requests))
        bounded_us.append(run(bounded, loop, data, args.requests))
    b, h = min(base_us), min(bounded_us)
    print(f"request {len(data)} bytes; best of {args.repeats} × {args.requests} requests")
    print(f"uvicorn HttpToolsProtocol  {b:7.2f} µs/request")
    print(f"HeaderBoundedProtocol      {h:7.2f} µs/request")
    print(f"difference                 {h - b:+7.2f} µs/request")


if __name__ == "__main__":
    main()
