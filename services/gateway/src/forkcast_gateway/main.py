"""`forkcast-gateway`: run the gateway on uvicorn (uvloop + httptools, header sections bounded: header_bounds.py),
settings from the environment; `forkcast-gateway keygen --id NAME [--admin]` prints a new API key and its key-file
line (keygen.py)."""

from __future__ import annotations

import argparse
import logging
import sys


def serve() -> None:
    import uvicorn

    from forkcast_gateway.app import create_app
    from forkcast_gateway.header_bounds import bounded_protocol
    from forkcast_gateway.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The access log (access_log.py) writes its JSON lines to stdout itself, nothing around them, so log shippers
    # parse them as they are.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # uvicorn's httptools protocol plus a deadline and a size cap on every header section (header_bounds.py:
        # FORKCAST_HEADER_TIMEOUT_S → 408, FORKCAST_MAX_HEADER_BYTES → 431); uvicorn.Config takes a class here.
        http=bounded_protocol(settings.max_header_bytes, settings.header_deadline_s),
        lifespan="on",
        access_log=False,
        # Idle keep-alive connections close after 5 s; every body is bounded by FORKCAST_BODY_TIMEOUT_S (→ 408)
        # and FORKCAST_MAX_BODY_BYTES (→ 413) in the Edge (body.py).
        timeout_keep_alive=5,
        log_level=settings.log_level.lower(),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forkcast-gateway",
        description="The forkcast gateway. Without a command it serves (settings from FORKCAST_* and REDIS_URL, "
        "see services/gateway/README.md).",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (the default)")
    keygen = sub.add_parser(
        "keygen",
        help="print a new API key and the line that admits it in FORKCAST_API_KEYS_FILE",
        description="Print a new random API key (256 bits) and its key-file line <id>:<sha256>[:admin]. The key "
        "is shown once and stored nowhere; the file keeps only its hash.",
    )
    keygen.add_argument("--id", required=True, dest="key_id", help="the key id: 1-64 of A-Z a-z 0-9 _ . -")
    keygen.add_argument("--admin", action="store_true", help="give the key the admin scope (/admin/*)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "keygen":
        from forkcast_gateway.keygen import new_key, render

        try:
            new = new_key(args.key_id, frozenset({"admin"}) if args.admin else frozenset())
        except ValueError as exc:
            print(f"forkcast-gateway keygen: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(render(new))
        return 0
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
