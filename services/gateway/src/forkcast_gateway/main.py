"""`forkcast-gateway`: run the gateway on uvicorn (uvloop + httptools), settings from the environment."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    import uvicorn

    from forkcast_gateway.app import create_app
    from forkcast_gateway.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The access log is one JSON object per line, nothing around it, so log shippers parse it as is.
    access = logging.getLogger("forkcast_gateway.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # Idle keep-alive connections close after 5 s; slow bodies are bounded by FORKCAST_BODY_TIMEOUT_S (→ 408).
        timeout_keep_alive=5,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
