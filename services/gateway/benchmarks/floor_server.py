"""The floor for bench_gateway.py: the least a gateway in front of the inference service must do, on the gateway's
own server stack, so that "gateway req/s ÷ floor req/s" and the CPU µs per request of both say what the gateway's
own work (auth, rate limit, validation, request ids, metrics, access log) costs.

Precisely: uvicorn with the gateway's HTTP protocol (forkcast_gateway.header_bounds.bounded_protocol over
httptools, uvloop, the same keep-alive setting as forkcast_gateway.main) serving one raw ASGI app that, for every
``POST /recommend/<user>``, reads the request body, sends it as ``POST /recommend/<user>`` to the upstream over the
gateway's pooled keep-alive HTTP/1.1 connections (forkcast_gateway.upstream_pool.Pool), and answers the upstream's
status and body with ``content-type`` and ``content-length``. No key check, no rate limit, no body validation, no
request id, no metrics, no log: what no gateway can skip is receiving, forwarding and returning.

    python services/gateway/benchmarks/floor_server.py --port 8100 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from forkcast_gateway.header_bounds import bounded_protocol
from forkcast_gateway.settings import GatewaySettings
from forkcast_gateway.upstream_pool import Pool

Message = MutableMapping[str, Any]


def floor_app(host: str, port: int) -> Callable[..., Awaitable[None]]:
    pool = Pool(host, port, [], limit=64)
    host_header = pool.host_header

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if scope["path"] == "/healthz":
            answer_status, answer = 200, b'{"status":"ok"}'
        else:
            head = (
                f"POST {scope['path']} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            loop = asyncio.get_running_loop()
            reply = await pool.request(head.encode() + body, 1.0, loop.time() + 5.0)
            answer_status, answer = reply.status, reply.body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": answer_status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    ap.add_argument("--upstream", required=True, help="the inference service, http://HOST:PORT")
    args = ap.parse_args()
    url = urlsplit(args.upstream)
    defaults = GatewaySettings(environment="local")
    uvicorn.run(
        floor_app(url.hostname or "127.0.0.1", url.port or 80),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=bounded_protocol(defaults.max_header_bytes, defaults.header_deadline_s),
        lifespan="off",
        access_log=False,
        timeout_keep_alive=5,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
