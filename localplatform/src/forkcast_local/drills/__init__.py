"""The drills: one scenario per module of this package, all run the same way (``forkcast-local drill NAME``).

A drill module opens with a docstring saying what it shows (its first line is the ``--list`` summary) and defines
``NAME`` (the command-line name), ``add_arguments(parser)`` (its options) and ``run(args) -> int`` (exit status 0
when the scenario ends as it must). Adding a drill is adding such a module: the registry finds every module here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Drill:
    name: str
    summary: str
    module: ModuleType


def registry() -> dict[str, Drill]:
    """Every drill module of this package, by its NAME; a module without the protocol is an error naming it."""
    drills: dict[str, Drill] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        missing = [a for a in ("NAME", "add_arguments", "run") if not hasattr(module, a)]
        if missing or not module.__doc__:
            raise TypeError(f"drill module {module.__name__} lacks {missing or ['its docstring']}")
        name = str(module.NAME)
        if name in drills:
            raise TypeError(f"two drills named {name}: {drills[name].module.__name__} and {module.__name__}")
        drills[name] = Drill(name, module.__doc__.strip().splitlines()[0], module)
    return drills


def main(argv: list[str] | None = None) -> int:
    """``forkcast-local drill --list`` | ``forkcast-local drill NAME [options]``."""
    argv = sys.argv[1:] if argv is None else argv
    drills = registry()
    if not argv or argv[0] in ("--list", "-l", "--help", "-h"):
        print("forkcast-local drill NAME [options]   (NAME --help: its options)\n")
        for drill in drills.values():
            print(f"  {drill.name:<22} {drill.summary}")
        return 0 if argv[:1] in (["--list"], ["-l"], ["--help"], ["-h"]) else 2
    found = drills.get(argv[0])
    if found is None:
        print(f"forkcast-local drill: no drill {argv[0]!r}; known: {', '.join(drills)}", file=sys.stderr)
        return 2
    drill = found
    parser = argparse.ArgumentParser(prog=f"forkcast-local drill {drill.name}", description=drill.module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    drill.module.add_arguments(parser)
    return int(drill.module.run(parser.parse_args(argv[1:])))
