"""``forkcast-lake``: one entry point, one subcommand per module.

Each module listed in :data:`SUBCOMMANDS` defines ``add_parser(subparsers)``, which adds its subcommand and sets
``run`` (a function of the parsed arguments returning the exit status) with ``parser.set_defaults(run=...)``.
Adding a command is writing that module and one line here; modules are imported only when the CLI starts, so a
subcommand's heavy imports never slow another.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

# Modules that each add one subcommand (see the module docstring).
SUBCOMMANDS: tuple[str, ...] = (
    "forkcast_lake.datasets_cli",
    "forkcast_lake.compact_cli",
    "forkcast_lake.training_table",
    "forkcast_lake.pit_auc",
    "forkcast_lake.retention",
)


class _SubcommandModule(Protocol):
    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkcast-lake",
        description="The lake: Delta Lake tables in S3 (dataset snapshots, the served log, training tables).",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        cast(_SubcommandModule, importlib.import_module(name)).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = cast(Callable[[argparse.Namespace], int], args.run)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
