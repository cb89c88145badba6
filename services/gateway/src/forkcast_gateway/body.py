"""Reading a request body with one size cap and one deadline, for every route (issue 18.4).

The Edge reads the body of every admitted request through :func:`receive_body` before any route sees it (the
/recommend fast path calls it itself); a route then gets the bytes from :func:`replay`. So /feedback, /admin/*,
the open routes and unknown paths are bounded exactly like /recommend: a body counted as it streams (a chunked
body has no Content-Length to check in advance) is cut at the cap (413), and one that trickles in is cut at the
deadline (408) instead of holding a connection at the client's pace (slowloris).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def receive_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole body, or BodyError: 413 past ``limit`` bytes, 408 when it is not complete within ``timeout_s``."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError(400, "client disconnected before the body was complete")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"request body exceeds {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyError(408, f"request body not received within {timeout_s} s") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read ``body`` over once, then waits on the real one (disconnect)."""
    pending = True

    async def again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
