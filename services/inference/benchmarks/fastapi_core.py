"""The service's own core behind FastAPI instead of the lean ASGI app: what the framework alone costs.

Best case for FastAPI: the route takes the raw body and calls the same ``InferenceApp.recommend`` (msgspec parsing,
same Redis reads, same model), so the difference to the lean app is routing, request/response objects and
middleware only. `bench_serve.py --fastapi-core` measures it in the same run.

Run: ``python fastapi_core.py --port P`` with the service's environment (REDIS_URL, FORKCAST_MODEL_DIR, …).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uvicorn
from fastapi import FastAPI, Request, Response

from forkcast_inference.app import UnavailableError, create_app
from forkcast_inference.settings import get_settings


def create_fastapi_app() -> FastAPI:
    core = create_app(get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        core.startup()
        core.events.start(core.settings.events_flush_s)
        yield
        await core.events.stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/recommend/{user_id}")
    async def recommend(user_id: str, request: Request) -> Response:
        try:
            status, body, headers = await core.recommend(user_id, await request.body(), "bench")
        except UnavailableError as exc:
            return Response(str(exc), status_code=503)
        return Response(
            body,
            status_code=status,
            headers={k.decode(): v.decode() for k, v in headers[1:]},
            media_type="application/json",
        )

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        ok, reason = core.readiness()
        response.status_code = 200 if ok else 503
        return {"ready": ok, "reason": reason}

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    uvicorn.run(
        create_fastapi_app(),
        host="127.0.0.1",
        port=a.port,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )
