"""The published schema says exactly what the server accepts (issue 18.8)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from forkcast_contract.api import INT64_MAX
from forkcast_gateway.edge import Edge
from forkcast_gateway.openapi import exact_integer_bounds
from forkcast_gateway.request_ids import RequestIds
from forkcast_gateway.testing import KEY, serve


@pytest.fixture
def gateway(make_gateway: Callable[..., Edge]) -> Iterator[str]:
    with serve(make_gateway()) as url:
        yield url


def _integer_schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield node
        for child in node.values():
            yield from _integer_schemas(child)
    elif isinstance(node, list):
        for child in node:
            yield from _integer_schemas(child)


def test_integer_bounds_are_published_exactly(gateway: str) -> None:
    """FastAPI published the int64 maximum as 9.223372036854776e18 (= 2**63, one past it) before the fix."""
    spec = requests.get(f"{gateway}/openapi.json", timeout=5).json()
    integers = list(_integer_schemas(spec))
    assert len(integers) >= 4
    for node in integers:
        for name in ("minimum", "maximum"):
            assert name not in node or type(node[name]) is int, node
    feedback_id = spec["components"]["schemas"]["FeedbackEvent"]["properties"]["restaurant_id"]
    assert (feedback_id["minimum"], feedback_id["maximum"]) == (0, INT64_MAX)
    assert "403" in spec["paths"]["/feedback"]["post"]["responses"]
    assert "409" in spec["paths"]["/admin/keys/reload"]["post"]["responses"]


def test_the_server_takes_the_published_maximum_and_refuses_one_more(gateway: str, ids: RequestIds) -> None:
    def feedback(restaurant: Any) -> requests.Response:
        event = {"request_id": ids.mint("user"), "restaurant_id": restaurant, "clicked": False}
        return requests.post(f"{gateway}/feedback", json=event, headers={"x-api-key": KEY}, timeout=5)

    assert feedback(INT64_MAX).status_code == 202
    assert feedback(1.0).status_code == 202  # an integer to JSON Schema
    over = feedback(INT64_MAX + 1)
    assert over.status_code == 422 and over.json()["errors"][0]["rule"] == "less_than_equal"
    assert feedback("7").status_code == 422  # a string is not, and is refused


def test_exact_integer_bounds_clamps_only_integer_schemas() -> None:
    doc = {
        "a": {"type": "integer", "maximum": 9.223372036854776e18, "minimum": 0.0},
        "b": {"type": "number", "maximum": 1.5},
    }
    exact_integer_bounds(doc)
    assert doc == {
        "a": {"type": "integer", "maximum": INT64_MAX, "minimum": 0},
        "b": {"type": "number", "maximum": 1.5},
    }
