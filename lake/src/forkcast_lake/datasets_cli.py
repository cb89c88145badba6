"""``forkcast-lake dataset publish|show``: dataset snapshots from the command line.

``forkcast-data publish`` and ``generate --out s3://…`` call the same :func:`forkcast_lake.datasets.publish`;
these subcommands are for operators looking at (or repairing) what the lake holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forkcast_lake.datasets import LakeDataError, PublishResult, publish
from forkcast_lake.datasets_fetch import resolve
from forkcast_lake.datasets_read import add_data_arguments, parse_data_version
from forkcast_lake.storage import is_remote
from forkcast_registry.errors import RegistryError


def describe_publish(result: PublishResult) -> str:
    """One line saying what a publish did; ``forkcast-data publish`` prints the same."""
    if result.created:
        return f"published {result.uri} version {result.version} (fingerprint {result.fingerprint[:12]})"
    return (
        f"{result.uri} already holds this dataset as version {result.version} "
        f"(fingerprint {result.fingerprint[:12]}): no new version"
    )


def _publish(args: argparse.Namespace) -> int:
    if not is_remote(args.to):
        print(f"forkcast-lake: error: --to {args.to!r} is not an s3://bucket/prefix URI", file=sys.stderr)
        return 2
    print(describe_publish(publish(Path(args.dir), args.to)))
    return 0


def _show(args: argparse.Namespace) -> int:
    if not is_remote(args.data):
        print(f"forkcast-lake: error: --data {args.data!r} is not an s3://bucket/prefix URI", file=sys.stderr)
        return 2
    snapshot = resolve(args.data, parse_data_version(args.data_version))
    print(json.dumps(snapshot.record() | {"preset": snapshot.manifest.preset}, indent=2))
    return 0


def _guarded(run: argparse.Namespace) -> int:
    try:
        return int(run.action(run))
    except (LakeDataError, RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"forkcast-lake: error: {exc}", file=sys.stderr)
        return 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dataset", help="publish or inspect dataset snapshots")
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    pub = sub.add_parser(
        "publish",
        help="upload a finished dataset directory as a new snapshot (no new version if already there)",
    )
    pub.add_argument("dir", help="dataset directory (with dataset.json)")
    pub.add_argument("--to", required=True, help="s3://bucket/prefix of the dataset in the lake")
    pub.set_defaults(run=_guarded, action=_publish)
    show = sub.add_parser("show", help="print the snapshot a --data/--data-version pair resolves to")
    add_data_arguments(show)
    show.set_defaults(run=_guarded, action=_show)
