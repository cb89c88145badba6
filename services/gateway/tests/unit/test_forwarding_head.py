"""The forwarder writes the upstream request head itself (upstream_pool): a CR or LF in any value it puts there
would split the request, so such a value never leaves the gateway — refused before any connection is opened."""

from __future__ import annotations

import asyncio

import pytest

from forkcast_devservers.ports import free_port
from forkcast_gateway.forwarding import Forwarder, Unavailable
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.upstreams import Upstreams, parse_upstreams


@pytest.mark.parametrize(
    ("user", "request_id", "key_id"),
    [("u1\r\nX-Forkcast-Key-Id: ops", "rid", "user"), ("u1", "rid\nx: y", "user"), ("u1", "rid", "user\r")],
)
def test_a_value_holding_cr_or_lf_is_never_forwarded(user: str, request_id: str, key_id: str) -> None:
    upstreams = Upstreams(parse_upstreams(f"http://127.0.0.1:{free_port()}", 5, 1.0))
    forwarder = Forwarder(
        upstreams, Metrics(), connect_timeout_s=0.5, total_timeout_s=1.0, max_in_flight=4, pool_size=4
    )

    async def run() -> None:
        with pytest.raises(Unavailable, match="CR or LF"):
            await forwarder.recommend(user, b"{}", request_id, key_id)
        assert not forwarder.pools, "a connection pool was set up for a request that must not go out"

    asyncio.run(run())
