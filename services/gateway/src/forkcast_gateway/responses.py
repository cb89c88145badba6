"""Error bodies and the documented error responses, one shape for every route: ``{"detail", "errors"}``.

422 bodies list each failed field (``field``, ``rule``, ``message``) like FastAPI's own, whichever way a request
came in (the Edge's /recommend fast path or a FastAPI route).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse, Response

from forkcast_gateway.schemas import ErrorResponse

RETRY = {"retry-after": "1"}


def field_errors(errs: list[Any]) -> list[dict[str, str]]:
    return [
        {
            # FastAPI locates a JSON syntax error at ("body", <char offset>): the offset is not a field name.
            "field": "body"
            if e["type"] == "json_invalid"
            else ".".join(str(p) for p in e["loc"] if p not in ("body", "path")) or "body",
            "rule": e["type"],
            "message": e["msg"],
        }
        for e in errs
    ]


def body_422(items: list[dict[str, str]]) -> bytes:
    detail = "; ".join(f"{i['field']}: {i['message']} ({i['rule']})" for i in items[:5])
    return json.dumps({"detail": detail, "errors": items}).encode()


def error_body(detail: str) -> bytes:
    return json.dumps({"detail": detail, "errors": []}).encode()


def error_422(errs: list[Any]) -> Response:
    return Response(body_422(field_errors(errs)), status_code=422, media_type="application/json")


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": []}, status_code=status, headers=headers)


def documented(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given codes (``_401="…"``), each with the ErrorResponse body."""
    return {int(k.lstrip("_")): {"model": ErrorResponse, "description": v} for k, v in codes.items()}


ERRORS = documented(
    _401="Missing or invalid X-API-Key.",
    _408="The body was not received within FORKCAST_BODY_TIMEOUT_S.",
    _413="The body is larger than FORKCAST_MAX_BODY_BYTES.",
    _422="Malformed request: `errors` names each field and the rule it broke.",
    _429="Rate limit of this key exceeded; see Retry-After.",
    _503="Overloaded, upstream down or circuit open; see Retry-After.",
)
