"""``forkcast-lake``'s dispatch: a command imports only its own module, and parsing reads no settings, so the
compaction job (a Deployment, restarted with its pod) neither waits for polars nor fails on another command's
environment."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from forkcast_lake.cli import SUBCOMMANDS, _command, build_parser

# Runs `forkcast-lake compact --help` in a fresh interpreter and reports what it imported.
_PROBE = """
import json, sys
from forkcast_lake.cli import SUBCOMMANDS, main
try:
    main(["compact", "--help"])
    code = None
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "polars": "polars" in sys.modules,
                  "modules": sorted(m for m in SUBCOMMANDS.values() if m in sys.modules)}))
"""


def test_compact_help_imports_only_its_module_and_reads_no_settings() -> None:
    # FORKCAST_METRICS_PORT=0 is refused by the settings classes that read it (the compaction's, the online-AUC
    # job's): parsing must not build them.
    env = {**os.environ, "FORKCAST_METRICS_PORT": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, out.stderr
    assert "--once" in out.stdout  # compact's own option: its module did add the parser
    assert report["modules"] == ["forkcast_lake.compact_cli"]
    assert report["polars"] is False


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_listed_module_adds_the_command_it_is_listed_under(name: str) -> None:
    parser = build_parser(name)
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(action.choices) == {name}


def test_the_command_is_found_after_global_options_and_before_its_own() -> None:
    assert _command(["--log-level", "DEBUG", "compact", "--once"]) == "compact"
    assert _command(["training-table", "--since", "1", "--until", "2", "--out", "x"]) == "training-table"
    assert _command(["--help"]) is None


def test_an_unknown_command_is_refused_with_every_command_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser(_command(["compcat"])).parse_args(["compcat"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'compcat'" in err
    assert all(f"'{name}'" in err for name in SUBCOMMANDS)
