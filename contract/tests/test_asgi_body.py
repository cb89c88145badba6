"""The shared body reader (forkcast_contract.asgi_body): a body past its deadline ends 408 within a tick of the one
timer per loop, a cancellation from elsewhere stays a cancellation, the cap is counted as the body streams (413), a
client that leaves is 400, and no closed loop is kept alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from forkcast_contract.asgi_body import BodyError, _deadlines, receive_body


async def _whole() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


def test_a_body_past_its_deadline_is_408_within_a_tick_and_other_cancels_propagate() -> None:
    """The body deadline is one timer per loop: a read that never completes ends 408 at most a tick late, a
    cancellation from elsewhere stays a cancellation, and no read leaves an entry behind."""

    async def never() -> dict[str, Any]:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def ticking(until: float, tick_s: float) -> float:
        """How late a chain of ``tick_s`` sleeps (the deadline timer's own pattern) passes ``until``: how late this
        loop runs meanwhile."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(tick_s)
        return loop.time() - until

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        beside = asyncio.ensure_future(ticking(t0 + 0.2, 0.02))  # 0.02 s: the tick of a 0.2 s deadline
        with pytest.raises(BodyError) as cut:
            await receive_body(never, 100, 0.2)
        late = loop.time() - t0 - 0.2
        assert cut.value.status == 408 and str(cut.value) == "request body not received within 0.2 s"
        # Never early; late by at most a tick (0.02 s) and 80 ms more than the loop itself ran late, measured beside
        # it (a fixed 0.1 s can fail on a starved CI machine, where the whole loop runs late); and under 1 s in any
        # case, so a stall that delays both alike (a deadline that waited on something) still fails.
        loop_late = await beside
        assert 0 <= late < loop_late + 0.1 and late < 1.0, (late, loop_late)
        reader = asyncio.ensure_future(receive_body(never, 100, 5.0))
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert await asyncio.gather(*(receive_body(_whole, 100, 5.0) for _ in range(50))) == [b"{}"] * 50
        assert _deadlines(loop).pending == {}

    asyncio.run(scenario())


def test_a_streamed_body_is_cut_at_the_cap_and_a_departed_client_is_400() -> None:
    """Chunks are counted as they arrive (no Content-Length to trust): the chunk that passes the cap ends the read
    in 413, before anything after it is asked for; a disconnect before the last chunk is 400."""

    def chunks(*messages: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
        left = list(messages)

        async def receive() -> dict[str, Any]:
            return left.pop(0)

        return left, receive

    async def scenario() -> None:
        part = {"type": "http.request", "body": b"x" * 60, "more_body": True}
        left, receive = chunks(part, part, part)
        with pytest.raises(BodyError) as cut:
            await receive_body(receive, 100, 5.0)
        assert (cut.value.status, str(cut.value)) == (413, "request body exceeds 100 bytes")
        assert len(left) == 1, "read on past the cap"
        _, receive = chunks(part, {"type": "http.disconnect"})
        with pytest.raises(BodyError) as gone:
            await receive_body(receive, 100, 5.0)
        assert (gone.value.status, str(gone.value)) == (
            400,
            "client disconnected before the body was complete",
        )
        _, receive = chunks(part, {"type": "http.request", "body": b"y" * 40, "more_body": False})
        assert (
            await receive_body(receive, 100, 5.0) == b"x" * 60 + b"y" * 40
        )  # exactly the cap is let through
        assert _deadlines(asyncio.get_running_loop()).pending == {}

    asyncio.run(scenario())


def test_the_body_deadlines_keep_no_closed_loop_alive() -> None:
    """One Deadlines per loop, held by a weak map: a loop that served a read and closed is collected with it."""
    loops = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(receive_body(_whole, 100, 5.0)) == b"{}"
        loops.append(weakref.ref(loop))
        loop.close()
        del loop
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
