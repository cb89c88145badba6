"""The end-to-end drill's "GitLab": the pipeline trigger API on 127.0.0.1, and the retraining pipeline it starts.

The pipeline runs the calls CI runs, in CI's order: prep > train > evaluate > gate > publish come from
``forkcast_retrain.steps`` (the single source that .gitlab-ci.yml and the Argo WorkflowTemplate are checked against in
tests/delivery), promote is read from the ``promote-dev`` job of .gitlab-ci.yml itself. The run directory starts
with ``trigger.json`` as CI's first job writes it, so the gate sees the alert that asked for the run (and reports the
drift it expects instead of failing on it) exactly as in CI.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from forkcast_local.config import REPO_ROOT
from forkcast_monitoring.prometheus_process import stop as stop_process
from forkcast_retrain.gate_policy import TRIGGER_FILE
from forkcast_retrain.steps import DATA, RECIPE, RUN, STEPS

CI_FILE = REPO_ROOT / ".gitlab-ci.yml"
PROMOTE_JOB = "promote-dev"


class PipelineError(RuntimeError):
    """A pipeline step failed (its log is named in the message)."""


def ci_promote_argv(version: str, repo: Path) -> list[str]:
    """The ``forkcast-retrain promote`` line of the promote-dev job, with $VERSION and $GITOPS_DIR filled in."""
    loader = type("_L", (yaml.SafeLoader,), {})
    loader.add_constructor("!reference", lambda ld, node: ld.construct_sequence(node))  # type: ignore[attr-defined]
    # The file opens with a header document (spec:inputs) before `---`; the jobs are the last document
    # (https://docs.gitlab.com/ci/inputs/: "the header section must be separated from the rest by ---").
    jobs: dict[str, Any] = list(yaml.load_all(CI_FILE.read_text(), Loader=loader))[-1]
    lines = [s for s in jobs[PROMOTE_JOB]["script"] if str(s).strip().startswith("forkcast-retrain promote")]
    if len(lines) != 1:
        raise PipelineError(
            f"{CI_FILE.name}: job {PROMOTE_JOB} has {len(lines)} 'forkcast-retrain promote' lines"
        )
    values = {"$VERSION": version, "$GITOPS_DIR": str(repo), "$CI_DEFAULT_BRANCH": "main"}
    argv = [values.get(a, a) for a in shlex.split(lines[0])]
    if any("$" in a for a in argv):
        raise PipelineError(f"{CI_FILE.name}: {PROMOTE_JOB} uses a variable the drill does not set: {argv}")
    return argv[1:]


@dataclass
class Pipeline:
    """One retraining pipeline: CI's calls on ``data`` into ``run``, promoting into the GitOps repo ``gitops``."""

    data: Path
    run: Path
    gitops: Path
    env: dict[str, str]
    bin_dir: Path
    on_stage: Callable[[str, dict[str, Any]], None]
    recipe: str = "default"
    variables: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _call(self, name: str, args: list[str]) -> int:
        log = self.run / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [str(self.bin_dir / "forkcast-retrain"), *args],
                env={**os.environ, **self.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
            self.procs.append(proc)
            code = proc.wait()
            self.procs.remove(proc)
        return code

    def _step(self, name: str, args: list[str]) -> None:
        if self._call(name, args) != 0:
            raise PipelineError(f"step {name} failed; see {self.run / name}.log")

    def execute(self) -> dict[str, Any]:
        """prep > train > evaluate > gate > publish > promote; ``result`` holds version, gate and overlay."""
        self.run.mkdir(parents=True, exist_ok=True)
        # What CI's prep job writes first: where the pipeline came from.
        (self.run / TRIGGER_FILE).write_text(json.dumps(self.variables))
        values = {RUN: str(self.run), DATA: str(self.data), RECIPE: self.recipe}
        for step in STEPS:
            args = step.argv(values)
            if step.name == "gate":
                self._gate(args)
            else:
                self._step(step.name, args)
                self.on_stage(step.name, {})
        return self._promote()

    def bootstrap(self, epochs: int) -> dict[str, Any]:
        """The release already in production before the drill: ``all --epochs N`` (one process), publish, promote.

        Setup, not the loop under test: the champion only has to exist in S3, MLflow and the overlay.
        """
        self.run.mkdir(parents=True, exist_ok=True)
        self._step("all", ["all", "--data", str(self.data), "--out", str(self.run), "--epochs", str(epochs),
                           "--no-progress"])  # fmt: skip
        self.on_stage(f"all --epochs {epochs}", {})
        self._step("publish", ["publish", "--out", str(self.run)])
        self.on_stage("publish", {})
        result = self._promote()
        # The baseline is what production runs: in CI the prod merge's sync-champion job makes it the champion the
        # next gate compares with. The drill has one environment, so its release file stands for prod's.
        self._step("sync-champion", ["sync-champion", "--overlay", "dev", "--repo", str(self.gitops)])
        self.on_stage("sync-champion", {})
        return result

    def _promote(self) -> dict[str, Any]:
        published = json.loads((self.run / "published.json").read_text())
        self.result["version"], self.result["uri"] = published["version"], published["uri"]
        release = self.gitops / "manifests" / "overlays" / "dev" / "model-release.yaml"
        before = release.read_text() if release.is_file() else ""
        self._step("promote", ci_promote_argv(published["version"], self.gitops))
        after = release.read_text()
        self.result["overlay_changed"] = before != after and published["version"] in after
        self.on_stage(
            "promote", {"version": published["version"], "overlay_changed": self.result["overlay_changed"]}
        )
        return self.result

    def _gate(self, args: list[str]) -> None:
        code = self._call("gate", args)
        report = json.loads((self.run / "gate_report.json").read_text())
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        allowed = [
            c["detail"]
            for c in report["checks"]
            if c["name"].startswith("drift") and "allowed" in c["detail"]
        ]
        self.result["gate_ci"] = {
            "passed": code == 0,
            "failed_checks": failed,
            "drift_allowed": allowed,
            "checks": report["checks"],
        }
        self.on_stage("gate", {"passed": code == 0, "failed_checks": failed, "drift_allowed": allowed})
        self.result["gate_passed"] = code == 0
        if code != 0:
            raise PipelineError(f"gate failed ({failed}); see {self.run / 'gate.log'}")

    def stop(self) -> None:
        for proc in list(self.procs):
            stop_process(proc)


@dataclass
class Trigger:
    at: float
    path: str
    form: dict[str, list[str]]


class LocalGitLab:
    """``POST /api/v4/projects/<id>/trigger/pipeline`` as GitLab answers it; each accepted call starts ``start``."""

    def __init__(self, project: str, token: str, start: Callable[[dict[str, str]], None]) -> None:
        self.calls: list[Trigger] = []
        self.refused = 0
        expected = f"/api/v4/projects/{urllib.parse.quote(project, safe='')}/trigger/pipeline"
        gitlab = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                form = urllib.parse.parse_qs(body)
                if self.path != expected or form.get("token") != [token]:
                    gitlab.refused += 1
                    self.send_response(404)
                    self.end_headers()
                    return
                gitlab.calls.append(Trigger(time.time(), self.path, form))
                variables = {k[10:-1]: v[0] for k, v in form.items() if k.startswith("variables[")}
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"id": len(gitlab.calls), "status": "created"}).encode())
                start({"CI_PIPELINE_SOURCE": "trigger", "CI_PIPELINE_URL": "", **variables})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
