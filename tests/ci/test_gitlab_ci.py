"""The GitLab pipeline definition is valid against GitLab's published schema (vendored in check-jsonschema).

`.gitlab-ci.yml` holds two YAML documents, the `spec: inputs` header and the pipeline, separated by `---` (GitLab
docs, "CI/CD inputs": the header is declared at the top of the file and separated from the rest with `---`).
check-jsonschema reads one document per file ("expected a single document in the stream"), so each document is
validated on its own against the same schema, which describes both (its top-level `spec` property is the header).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEPARATOR = "\n---\n"


def documents(text: str) -> tuple[str, str]:
    """The header and the pipeline, split at the first line that is exactly `---`."""
    header, sep, body = text.partition(SEPARATOR)
    assert sep, "no `---` line: the spec:inputs header is missing"
    return header + "\n", body


def check(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [
            str(checker),
            "--builtin-schema",
            "vendor.gitlab-ci",
            "--data-transform",
            "gitlab-ci",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("part", ["header", "pipeline"])
def test_gitlab_ci_yaml_is_valid(tmp_path: Path, part: str) -> None:
    header, body = documents((ROOT / ".gitlab-ci.yml").read_text())
    path = tmp_path / f"{part}.yml"
    path.write_text(header if part == "header" else body)
    result = check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_sees_a_broken_input(tmp_path: Path) -> None:
    """Twin: the header check is not vacuous; an input type GitLab does not know is refused by the schema."""
    header, _ = documents((ROOT / ".gitlab-ci.yml").read_text())
    broken = header.replace("      type: string", "      type: text", 1)
    assert broken != header
    path = tmp_path / "header.yml"
    path.write_text(broken)
    result = check(path)
    assert result.returncode == 1 and "'text' is not one of" in result.stdout + result.stderr


def test_ci_script_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.rstrip().splitlines()[-1] == "make test"
    assert "make test" in (ROOT / "README.md").read_text()
