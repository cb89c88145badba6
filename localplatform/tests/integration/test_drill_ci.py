"""The end-to-end drill's "GitLab" and CI's promote line, without the platform: the trigger body the alert receiver
sends is accepted and recorded as CI's .records-trigger records it; a wrong token, a missing ref or a variables[...]
field is refused, each with its own status."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from forkcast_devservers.process import start_ticks, tail
from forkcast_devservers.ready import wait_until
from forkcast_local.drill_ci import LocalGitLab, Pipeline, ci_promote_argv

PROJECT, TOKEN = "forkcast/forkcast", "trigger-token"


def _post(gitlab: LocalGitLab, form: dict[str, str], project: str = PROJECT) -> int:
    url = f"{gitlab.url}/api/v4/projects/{urllib.parse.quote(project, safe='')}/trigger/pipeline"
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def gitlab() -> object:
    started: list[dict[str, str]] = []
    server = LocalGitLab(started.append)
    server.expect(PROJECT, TOKEN)
    yield server, started
    server.close()


def test_the_receivers_inputs_are_recorded_as_ci_records_them(
    gitlab: tuple[LocalGitLab, list[dict[str, str]]],
) -> None:
    server, started = gitlab
    body = {
        "token": TOKEN,
        "ref": "main",
        "inputs[alert_name]": "OnlineAucLow",
        "inputs[alert_reason]": "AUC 0.61",
    }
    assert _post(server, body) == 201
    assert started == [{"CI_PIPELINE_SOURCE": "trigger", "CI_PIPELINE_URL": f"{server.url}/{PROJECT}/-/pipelines/1",
                        "alert_name": "OnlineAucLow", "alert_reason": "AUC 0.61"}]  # fmt: skip
    assert "token" not in server.calls[0].form


@pytest.mark.parametrize(
    ("form", "project", "status", "why"),
    [
        ({"token": "wrong", "ref": "main"}, PROJECT, 404, "404 Not Found"),
        ({"token": TOKEN, "ref": "main"}, "other/project", 404, "404 Not Found"),
        ({"token": TOKEN}, PROJECT, 400, "ref is missing or variables were sent"),
        ({"token": TOKEN, "ref": "main", "variables[RETRAIN_IMAGE]": "evil"}, PROJECT, 400,
         "ref is missing or variables were sent"),
    ],
)  # fmt: skip
def test_a_bad_trigger_is_refused_and_starts_nothing(
    gitlab: tuple[LocalGitLab, list[dict[str, str]]],
    form: dict[str, str],
    project: str,
    status: int,
    why: str,
) -> None:
    server, started = gitlab
    assert _post(server, form, project) == status
    assert server.refused == [(status, why)] and started == [] and server.calls == []


def test_the_promote_line_of_ci_goes_to_the_platforms_overlay(tmp_path: Path) -> None:
    argv = ci_promote_argv("v1", tmp_path, "local")
    assert argv[:1] == ["promote"] and argv[argv.index("--overlay") + 1] == "local"
    assert argv[argv.index("--version") + 1] == "v1" and argv[argv.index("--repo") + 1] == str(tmp_path)
    assert json.dumps(argv).count("$") == 0


def test_stopping_a_pipeline_stops_its_running_step_and_what_the_step_forked(tmp_path: Path) -> None:
    """``Pipeline.stop`` (forkcast_devservers' stop by process group): the CLI and its child both end, and the
    stopped step does not read as a success."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    step = (
        bin_dir / "forkcast-retrain"
    )  # a step that forks a child and waits for it, as a CLI's workers would
    step.write_text("#!/bin/sh\nsleep 60 &\necho $! \nwait\n")
    step.chmod(0o755)
    run = tmp_path / "run"
    run.mkdir()
    pipeline = Pipeline(tmp_path, run, tmp_path, {}, bin_dir, lambda *_: None, "dev")
    codes: list[int] = []
    caller = threading.Thread(target=lambda: codes.append(pipeline._call("train", ["train"])))
    caller.start()
    wait_until(lambda: tail(run / "train.log", 1).strip().isdigit(), timeout_s=10, what="the step's child")
    child = int(tail(run / "train.log", 1))

    pipeline.stop()
    caller.join(timeout=15)

    assert codes and codes[0] != 0, "a stopped step read as a success"
    assert start_ticks(child) is None, "the step's child outlived Pipeline.stop()"
    assert pipeline.procs == []
