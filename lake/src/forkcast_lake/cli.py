"""``forkcast-lake``: one entry point, one subcommand per module, each module imported only when its command runs.

Each module listed in :data:`SUBCOMMANDS` defines ``add_parser(subparsers)``, which adds its subcommand and sets
``run`` (a function of the parsed arguments returning the exit status) with ``parser.set_defaults(run=...)``;
``run`` reads the settings, so an environment one command refuses never breaks another's parsing. Adding a command
is writing that module and one line here. Only the named command's module is imported (``forkcast-lake compact``
never pays the ~2 s polars import of the training-table and dataset commands, on every pod restart); the top-level
``--help`` and an unknown command import all of them, to list them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol, cast

from forkcast_lake.process_exit import exit_after

# Command name → the module that adds it (see the module docstring).
SUBCOMMANDS: dict[str, str] = {
    "dataset": "forkcast_lake.datasets_cli",
    "compact": "forkcast_lake.compact_cli",
    "training-table": "forkcast_lake.training_table",
    "online-auc": "forkcast_lake.pit_auc",
    "maintain": "forkcast_lake.retention",
}


class _SubcommandModule(Protocol):
    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, found as argparse will (the first positional after the global options)."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--log-level")
    probe.add_argument("command", nargs="?")
    known, _ = probe.parse_known_args(argv)
    return cast(str | None, known.command)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module only, or with every module when ``command`` is None or unknown."""
    parser = argparse.ArgumentParser(
        prog="forkcast-lake",
        description="The lake: Delta Lake tables in S3 (dataset snapshots, the served log, training tables).",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else list(SUBCOMMANDS.values())
    for name in names:
        cast(_SubcommandModule, importlib.import_module(name)).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = cast(Callable[[argparse.Namespace], int], args.run)
    return run(args)


def run() -> NoReturn:
    """The console script: :func:`main`, then exit without finalizing delta-rs (forkcast_lake.process_exit)."""
    exit_after(main)


if __name__ == "__main__":
    run()
