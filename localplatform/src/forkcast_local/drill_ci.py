"""The end-to-end drill's "GitLab": the pipeline trigger API on 127.0.0.1, and the retraining pipeline it starts.

``LocalGitLab`` answers ``POST /api/v4/projects/<id>/trigger/pipeline`` as GitLab does for the body the alert
receiver sends (``token``, ``ref``, ``inputs[alert_name]``, ``inputs[alert_reason]``: forkcast_monitoring.receiver).
The pipeline runs the calls CI runs, in CI's order: prep > train > evaluate > gate > publish come from
``forkcast_retrain.steps`` (the single source that .gitlab-ci.yml and the Argo WorkflowTemplate are checked against in
tests/delivery), promote is read from the ``promote-dev`` job of .gitlab-ci.yml itself (into the platform's overlay:
the drill has one environment). The run directory starts with ``trigger.json`` as CI's ``.records-trigger`` writes it
(``CI_PIPELINE_SOURCE``, ``CI_PIPELINE_URL``, ``alert_name``, ``alert_reason``), so the gate sees the alert that
asked for the run (and reports the drift it expects instead of failing on it) exactly as in CI.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from forkcast_devservers.process import Proc, spawn, wait_exit
from forkcast_devservers.process import stop as stop_process
from forkcast_local.config import REPO_ROOT
from forkcast_retrain.gate_policy import TRIGGER_FILE
from forkcast_retrain.steps import DATA, DATA_VERSION, RECIPE, RUN, STEPS

CI_FILE = REPO_ROOT / ".gitlab-ci.yml"
PROMOTE_JOB = "promote-dev"


class PipelineError(RuntimeError):
    """A pipeline step failed (its log is named in the message)."""


def ci_promote_argv(version: str, repo: Path, overlay: str) -> list[str]:
    """The ``forkcast-retrain promote`` line of the promote-dev job, with $VERSION and $GITOPS_DIR filled in and its
    ``--overlay`` set to ``overlay`` (the platform's: what the local render deploys)."""
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
    if "--overlay" not in argv:
        raise PipelineError(f"{CI_FILE.name}: {PROMOTE_JOB} promotes without --overlay: {argv}")
    argv[argv.index("--overlay") + 1] = overlay
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
    on_stage: Callable[[str, dict[str, Any]], object]
    overlay: str
    recipe: str = "default"
    trigger: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    # Spawning a step and recording it are one step under this lock, and ``stop`` takes it too: otherwise a stop
    # between the spawn and the append (a loaded CI machine, the child already running) found no step to stop.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = False

    def _call(self, name: str, args: list[str]) -> int:
        """Run one ``forkcast-retrain`` step to its end; its exit status (not 0 when ``stop`` ended it)."""
        with self._lock:
            if self._stopped:
                return -signal.SIGTERM
            proc = spawn(
                [str(self.bin_dir / "forkcast-retrain"), *args],
                env={**os.environ, **self.env},
                cwd=REPO_ROOT,
                log=self.run / f"{name}.log",
            )
            self.procs.append(proc)
        try:
            code = wait_exit(proc)
        finally:
            self.procs.remove(proc)
        return -signal.SIGTERM if code is None else code

    def _step(self, name: str, args: list[str]) -> None:
        if self._call(name, args) != 0:
            raise PipelineError(f"step {name} failed; see {self.run / name}.log")

    def execute(self) -> dict[str, Any]:
        """prep > train > evaluate > gate > publish > promote; ``result`` holds version, gate and overlay."""
        self.run.mkdir(parents=True, exist_ok=True)
        # What CI's prep job writes first (.records-trigger): where the pipeline came from.
        (self.run / TRIGGER_FILE).write_text(json.dumps(self.trigger))
        # DATA_VERSION empty, as CI's `dataset_version` input defaults: the drill's data is a local directory,
        # which has no versions (prep refuses one for it).
        values = {RUN: str(self.run), DATA: str(self.data), DATA_VERSION: "", RECIPE: self.recipe}
        for step in STEPS:
            args = step.argv(values)
            if step.name == "gate":
                self._gate(args)
            else:
                self._step(step.name, args)
                self.on_stage(step.name, {})
        return self._promote()

    def bootstrap(self, trained: Path) -> dict[str, Any]:
        """The release already in production before the drill: the run ``trained`` (``forkcast-retrain all``,
        made once and reused) published to this platform's S3 and MLflow, then promoted.

        Setup, not the loop under test: the champion only has to exist in S3, MLflow and the overlay.
        """
        # Its record of a publish or an MLflow run belongs to another platform: this one publishes it anew.
        shutil.copytree(trained, self.run, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("published.json", "mlflow_run.json", "*.log"))  # fmt: skip
        self.on_stage("trained run", {"from": str(trained)})
        self._step("publish", ["publish", "--out", str(self.run)])
        self.on_stage("publish", {})
        result = self._promote()
        # The baseline is what production runs: in CI the prod merge's sync-champion job makes it the champion the
        # next gate compares with. The drill has one environment, so its release file stands for prod's.
        self._step("sync-champion", ["sync-champion", "--overlay", self.overlay, "--repo", str(self.gitops)])
        self.on_stage("sync-champion", {})
        return result

    def _promote(self) -> dict[str, Any]:
        published = json.loads((self.run / "published.json").read_text())
        self.result["version"], self.result["uri"] = published["version"], published["uri"]
        release = self.gitops / "manifests" / "overlays" / self.overlay / "model-release.yaml"
        before = release.read_text() if release.is_file() else ""
        self._step("promote", ci_promote_argv(published["version"], self.gitops, self.overlay))
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
        """Stop the step running now (a CLI this pipeline started, with what it forked): SIGTERM, SIGKILL after 10 s."""
        with self._lock:
            self._stopped = True
            procs = list(self.procs)
        for proc in procs:
            stop_process(proc)


@dataclass
class Trigger:
    """One accepted trigger call: when, and the form fields of its body (``token`` left out)."""

    at: float
    path: str
    form: dict[str, list[str]]

    def record(self, url: str) -> dict[str, str]:
        """What CI's ``.records-trigger`` writes to ``trigger.json`` for this call."""
        first = {k: v[0] for k, v in self.form.items()}
        return {
            "CI_PIPELINE_SOURCE": "trigger",
            "CI_PIPELINE_URL": url,
            "alert_name": first.get("inputs[alert_name]", ""),
            "alert_reason": first.get("inputs[alert_reason]", ""),
        }


class LocalGitLab:
    """``POST /api/v4/projects/<id>/trigger/pipeline`` as GitLab answers it; each accepted call starts ``start``.

    GitLab refuses a trigger without a valid token or ``ref`` (404 for an unknown token, 400 for a missing ref:
    docs.gitlab.com/api/pipeline_triggers), and a ``.gitlab-ci.yml`` with ``spec:inputs`` refuses ``variables``
    that would override its own (issue 18.3): so here a call with a wrong token is 404, one without ``ref`` or with
    any ``variables[...]`` field is 400, and an accepted one (201) hands ``start`` the record CI writes.
    ``expect`` sets the project and token (known once the platform's Secrets exist; the port is needed first).
    """

    def __init__(self, start: Callable[[dict[str, str]], None]) -> None:
        self.calls: list[Trigger] = []
        self.refused: list[tuple[int, str]] = []
        self.project, self.token = "", ""
        gitlab = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                expected = f"/api/v4/projects/{urllib.parse.quote(gitlab.project, safe='')}/trigger/pipeline"
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if self.path != expected or not gitlab.token or form.get("token") != [gitlab.token]:
                    return self._refuse(404, "404 Not Found")
                if any(k.startswith("variables[") for k in form) or not form.get("ref"):
                    return self._refuse(400, "ref is missing or variables were sent")
                trigger = Trigger(time.time(), self.path, {k: v for k, v in form.items() if k != "token"})
                gitlab.calls.append(trigger)
                url = f"{gitlab.url}/{gitlab.project}/-/pipelines/{len(gitlab.calls)}"
                start(trigger.record(url))  # the pipeline exists before the 201 says so, as in GitLab
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"id": len(gitlab.calls), "status": "created"}).encode())

            def _refuse(self, status: int, why: str) -> None:
                gitlab.refused.append((status, why))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def expect(self, project: str, token: str) -> None:
        self.project, self.token = project, token

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
