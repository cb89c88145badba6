"""``GET /healthz`` (the process answers), ``GET /readyz`` (some upstream is ready), ``GET /metrics``; open to all
(edge.EXEMPT), so probes and Prometheus need no key."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forkcast_gateway.forwarding import Forwarder
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.schemas import Health, Readiness
from forkcast_gateway.upstream_pool import ProtocolError
from forkcast_gateway.upstreams import Endpoint, Upstreams


def router(forwarder: Forwarder, upstreams: Upstreams, metrics: Metrics, timeout_s: float) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        async def probe(endpoint: Endpoint) -> bool:
            try:
                return (await forwarder.get(endpoint, "/readyz", timeout_s)).status == 200
            except (OSError, TimeoutError, ProtocolError):
                return False

        endpoints = upstreams.endpoints
        bases = [e.base for e in endpoints]
        results = dict(zip(bases, await asyncio.gather(*(probe(e) for e in endpoints)), strict=True))
        ready = any(results.values())
        return JSONResponse(
            Readiness(ready=ready, upstreams=results).model_dump(), status_code=200 if ready else 503
        )

    @api.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api
