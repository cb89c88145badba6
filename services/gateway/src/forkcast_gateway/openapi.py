"""The published OpenAPI document, with integer bounds as exact integers.

FastAPI builds the document through its own ``Schema`` model, whose ``minimum``/``maximum`` are floats
(fastapi/openapi/models.py; fastapi/fastapi#3355, #9517), so the int64 maximum 9223372036854775807 the server
enforces was published as 9.223372036854776e18 = 2**63: schemathesis then generated 2**63 as a valid id and the
server refused it (issue 18.8). This puts each integer schema's bounds back as ints. No bound of this contract
lies above the int64 maximum, and float(INT64_MAX) rounds up to 2**63, so a bound at or above 2**63 was INT64_MAX.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from forkcast_contract.api import INT64_MAX

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def exact_integer_bounds(node: Any) -> None:
    """In place: every ``{"type": "integer"}`` schema under ``node`` gets int bounds (clamped to the int64 range)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for name in _BOUNDS:
                value = node.get(name)
                if isinstance(value, float):
                    node[name] = INT64_MAX if value >= INT64_MAX else max(int(value), -INT64_MAX - 1)
        for child in node.values():
            exact_integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            exact_integer_bounds(child)


def install(api: FastAPI) -> None:
    """Make ``api.openapi()`` (and so /openapi.json) return the repaired document, built once."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                openapi_version=api.openapi_version,
                description=api.description,
                routes=api.routes,
            )
            exact_integer_bounds(schema)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
