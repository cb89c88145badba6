"""``forkcast-registry``: look at and tidy the S3 model registry (list, describe, verify, gc).

Settings come from the environment: S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
FORKCAST_BUCKET, FORKCAST_MODEL_NAME, FORKCAST_MODEL_CACHE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta

from forkcast_registry.errors import RegistryError
from forkcast_registry.gc import plan_gc, run_gc
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkcast-registry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="versions, oldest first; incomplete uploads are marked")
    p.add_argument("--all", action="store_true", help="also show incomplete versions (no manifest)")
    p = sub.add_parser("describe", help="print a version's manifest")
    p.add_argument("version")
    p = sub.add_parser("verify", help="download a version into the cache and check every sha256")
    p.add_argument("version")
    p.add_argument("--manifest-sha256", help="also require manifest.json to have this sha256 (a release pin)")
    p = sub.add_parser("gc", help="delete old non-protected versions and stale incomplete uploads")
    p.add_argument("--keep", type=int, default=10, help="newest complete versions to keep (default 10)")
    p.add_argument(
        "--protect",
        action="append",
        default=[],
        help="a version never to delete (e.g. each overlay's release)",
    )
    p.add_argument(
        "--grace-hours", type=float, default=1.0, help="leave incomplete uploads younger than this"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = ModelRegistry.from_settings(RegistrySettings())
    try:
        if args.command == "list":
            for v in registry.scan():
                if v.complete or args.all:
                    print(v.version if v.complete else f"{v.version}  (incomplete)")
        elif args.command == "describe":
            print(json.dumps(registry.describe(args.version).model_dump(mode="json"), indent=2))
        elif args.command == "verify":
            started = time.perf_counter()
            local = registry.download(args.version, args.manifest_sha256)
            print(
                f"{registry.uri(args.version)} verified into {local.path} "
                f"({len(local.manifest.files)} files, {time.perf_counter() - started:.2f} s)"
            )
        elif args.command == "gc":
            plan = plan_gc(registry, args.keep, set(args.protect), timedelta(hours=args.grace_hours))
            print(
                json.dumps({"delete": plan.delete_complete, "incomplete": plan.delete_incomplete}, indent=2)
            )
            if not args.dry_run:
                print(f"deleted {run_gc(registry, plan)} objects")
    except (RegistryError, ValueError) as exc:
        print(f"forkcast-registry {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
