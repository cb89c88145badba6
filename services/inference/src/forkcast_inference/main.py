"""`forkcast-inference`: run the service on uvicorn (uvloop + httptools, each answer in one write: http_protocol.py),
settings from the environment."""

from __future__ import annotations

import logging
import os


def main() -> None:
    # Before numpy loads: a request's matrices are tiny, and BLAS threads would only fight the other workers.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    from forkcast_inference.app import create_app
    from forkcast_inference.http_protocol import CoalescingProtocol
    from forkcast_inference.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=CoalescingProtocol,  # httptools, each answer in one write (http_protocol.py)
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
