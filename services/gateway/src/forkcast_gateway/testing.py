"""Test support for the gateway: run an ASGI app on a real loopback port in a thread, API key files, a stand-in
upstream. Importable as a module (``forkcast_gateway.testing``, extra ``testing``) by the gateway's tests and any
other suite that drives a gateway, so no test folder reaches into another by path. Nothing in the service imports
it.

The stand-in upstream is only for faults the real inference service cannot be made to show on demand (a slow
answer, a 500, counting what reached it); everything else runs against the real service. ``python -m
forkcast_gateway.testing --name NAME --port PORT`` serves one in its own process (uvicorn), for tests that need
several upstream processes (tests/integration/test_replica_balancing.py); its ``GET /hits`` answers how many
requests reached it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from forkcast_devservers.ports import free_port
from forkcast_gateway.auth import hash_key

KEY, ADMIN_KEY = "k-user-secret-0001", "k-admin-secret-0002"


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on ``host`` (a loopback address) in a background thread (uvicorn, lifespan on); yields the
    base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def write_keys(path: Path, keys: dict[str, tuple[str, str]]) -> Path:
    """keys: key id → (secret key, scopes like "" or "admin")."""
    lines = [
        f"{kid}:{hash_key(secret)}" + (f":{scopes}" if scopes else "")
        for kid, (secret, scopes) in keys.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class StandIn:
    """A scriptable upstream: answers ``status`` after ``delay_s``, records the paths and request ids it got
    (``hits``) and the X-Forkcast-Key-Id headers (``key_ids``)."""

    def __init__(self, name: str = "standin", status: int = 200, delay_s: float = 0.0) -> None:
        self.name, self.status, self.delay_s = name, status, delay_s
        self.hits: list[tuple[str, str]] = []
        self.key_ids: list[list[str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/hits":
            body = json.dumps({"name": self.name, "hits": len(self.hits)}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        rid = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        if scope["path"] != "/readyz":
            self.hits.append((scope["path"], rid))
            self.key_ids.append([v.decode() for k, v in scope["headers"] if k == b"x-forkcast-key-id"])
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = b'{"restaurants":[]}' if self.status == 200 else b'{"detail":"stand-in failure"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"x-model-version", self.name.encode()),
            (b"x-feature-version", b"fv-standin"),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve one StandIn in this process: ``--name`` is its x-model-version, ``--port`` its loopback port."""
    ap = argparse.ArgumentParser(
        description="A stand-in upstream (forkcast_gateway.testing.StandIn) on uvicorn."
    )
    ap.add_argument("--name", required=True, help="answered as x-model-version; /hits names it too")
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = ap.parse_args()
    uvicorn.run(StandIn(args.name), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
