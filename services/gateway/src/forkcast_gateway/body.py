"""Every route's body bounded alike (issue 18.4): the Edge reads it once, a route gets it back from :func:`replay`.

The Edge reads the body of every admitted request through forkcast_contract.asgi_body.receive_body (one size cap,
one deadline; the /recommend fast path calls it itself) before any route sees it; a route then gets the bytes from
:func:`replay`. So /feedback, /admin/*, the open routes and unknown paths are bounded exactly like /recommend: 413
past the cap, 408 past the deadline.
"""

from __future__ import annotations

from forkcast_contract.asgi_body import Message, Receive


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
