"""``forkcast-local``: the local platform (``up``, ``down``, ``status``, ``logs``), the end-to-end ``demo`` and the
drills (``drill NAME`` / ``drill --list``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from forkcast_lake.process_exit import exit_after
from forkcast_local.config import DEFAULT_CONFIG, load_config, read_state
from forkcast_local.supervisor import down, prepare, status_of, up


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkcast-local",
        description="Runs manifests/overlays/local on 127.0.0.1: every workload of the render (gateway, inference, "
        "online-AUC, drift, alert receiver, Redis) as its container's command with its rendered environment, and "
        "beside them SeaweedFS (S3), MLflow, Alertmanager and Prometheus configured from the render. Ports come "
        "from platform.toml; state, secrets, data and logs live under .local/.",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="ports file (default %(default)s)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="state directory (default $FORKCAST_LOCAL_ROOT or <repo>/.local)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="render the overlay, start what is not running (in order), wait until live")
    p.add_argument("components", nargs="*", help="only these (default: all)")
    p = sub.add_parser("down", help="stop exactly the processes `up` started, in reverse order")
    p.add_argument("components", nargs="*", help="only these (default: all)")
    sub.add_parser("status", help="each component: address, PID, liveness and readiness probes")
    p = sub.add_parser("logs", help="the last lines of one component's log, or of all")
    p.add_argument("component", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=20, help="lines per log (default %(default)s)")
    p.add_argument("-f", "--follow", action="store_true", help="keep following (tail -F)")
    p = sub.add_parser(
        "demo", help="data → train → platform → gate/publish/promote → features → real requests"
    )
    p.add_argument("--data", type=Path, default=Path("data/small"), help="dataset dir (default %(default)s)")
    p.add_argument("--preset", default="small", choices=["tiny", "small"], help="dataset preset to generate")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default %(default)s)")
    p.add_argument("--requests", type=int, default=300, help="requests sent through the gateway")
    sub.add_parser(
        "drill", add_help=False, help="a scenario on the platform: drill --list, drill NAME --help"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["drill"]:  # each drill has its own parser: `forkcast-local drill NAME --help`
        from forkcast_local.drills import main as drill

        return drill(argv[1:])
    args = _parser().parse_args(argv)
    config = load_config(args.config, args.root)
    try:
        if args.command == "up":
            platform = up(config, only=set(args.components) or None)
            print(f"API key in {config.api_key_file}; gateway docs {platform.url('gateway')}/docs")
        elif args.command == "down":
            down(config, only=set(args.components) or None)
        elif args.command == "status":
            ok = True
            platform = prepare(config)
            print(f"{'component':<14} {'address':<18} {'pid':>8}  health     ready")
            for row in status_of(platform):
                health = "healthy" if row.healthy else ("unhealthy" if row.running else "stopped")
                ready = "-" if row.ready is None else ("yes" if row.ready else "no")
                print(f"{row.name:<14} {row.url:<18} {row.pid or '-':>8}  {health:<10} {ready}")
                ok = ok and row.healthy
            for skipped in platform.skipped:  # in the render, not started here: said, not hidden
                print(f"not run locally: {skipped}")
            return 0 if ok else 1
        elif args.command == "logs":
            records = read_state(config)["components"]
            names = [args.component] if args.component else list(records)
            logs = [(records.get(n) or {}).get("log") for n in names]
            paths = [str(p) for p in logs if p and Path(p).is_file()]
            if not paths:
                print("no logs yet: run `forkcast-local up`", file=sys.stderr)
                return 1
            tail = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *paths]
            os.execvp("tail", tail)
        elif args.command == "demo":
            from forkcast_local.demo import DemoOptions, run_demo

            return int(
                run_demo(config, DemoOptions(args.data.resolve(), args.preset, args.epochs, args.requests))
            )
    except RuntimeError as exc:
        print(f"forkcast-local {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> NoReturn:
    """The console script: :func:`main`, then exit without finalizing delta-rs (forkcast_lake.process_exit)."""
    exit_after(main)


if __name__ == "__main__":
    run()
