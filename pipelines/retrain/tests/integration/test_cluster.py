"""Training on the cluster from CI (TRAIN_EXECUTOR=argo): `workflow submit --wait --fetch-run` end to end.

The Kubernetes API is a small local HTTP server answering the three calls the command makes (create a Workflow,
read it back, again and again) the way the API server does, driven through the real `kubernetes` client and a
real kubeconfig file; the run directory comes back from a real S3 (SeaweedFS `weed mini`), uploaded there in the
layout Argo's executor writes (a .tgz whose entries sit under `run/`).
"""

from __future__ import annotations

import http.server
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from forkcast_devservers.binaries import MissingBinaryError
from forkcast_devservers.servers import Seaweed
from forkcast_registry.testing import s3_client
from forkcast_retrain.workflow import CANDIDATE_ENTRYPOINT, main, run_key

try:  # `make setup` installs every extra (uv sync --all-extras): a missing client is a broken setup, not a skip
    import kubernetes  # noqa: F401
except ModuleNotFoundError as missing:
    raise MissingBinaryError(
        "the kubernetes Python client not found: install the `workflows` extra of forkcast-retrain (`make setup`)"
    ) from missing

NAME = "forkcast-retrain-t7x2k"
BUCKET = "argo-artifacts"
WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/ml/workflows"
DATASET = "s3://forkcast-datasets/datasets/small/"
RUN_FILES = {"model.pt": b"weights", "scaler.npz": b"scaler", "metrics.json": b'{"roc_auc": 0.71}'}


def running(progress: str, *steps: str) -> dict[str, Any]:
    nodes = {
        f"{NAME}-{i}": {"displayName": s, "type": "Pod", "phase": "Running"} for i, s in enumerate(steps)
    }
    return {"phase": "Running", "progress": progress, "nodes": nodes}


@dataclass
class FakeApi:
    """What the API server answers: each GET of the Workflow takes the next status (the last one repeats); an
    int is an error status for that GET."""

    statuses: list[dict[str, Any] | int]
    created: list[dict[str, Any]] = field(default_factory=list)
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (content type, body)
    gets: int = 0

    def next_status(self) -> dict[str, Any] | int:
        self.gets += 1
        return self.statuses[min(self.gets, len(self.statuses)) - 1]


def _handler(api: FakeApi) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != WORKFLOWS:
                return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            api.created.append(body)
            self._answer(201, {**body, "metadata": {**body["metadata"], "name": NAME}})

        def do_PATCH(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != f"{WORKFLOWS}/{NAME}":
                return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            api.patches.append((self.headers["Content-Type"], body))
            self._answer(200, {**api.created[-1], "metadata": {"name": NAME}, **body})

        def do_GET(self) -> None:
            if self.path != f"{WORKFLOWS}/{NAME}":
                return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            status = api.next_status()
            if isinstance(status, int):
                return self._answer(
                    status, {"kind": "Status", "code": status, "message": "apiserver says no"}
                )
            self._answer(200, {**api.created[-1], "metadata": {"name": NAME}, "status": status})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    """A fake API server on a free loopback port and a kubeconfig that points at it; set `api.statuses`."""
    api = FakeApi(statuses=[{}])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "t", "user": {"token": "test-token"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "current-context": "t",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))  # JSON is YAML
    try:
        yield api, kubeconfig
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def s3(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the artifact bucket (emptied) on the session's SeaweedFS (forkcast_devservers' ``seaweed``
    fixture); the command under test reads the same S3 settings from the environment."""
    seaweed.create_bucket(BUCKET)  # the artifact repository's bucket: infrastructure, there before any run
    for name, value in seaweed.client_env("unused").items():
        monkeypatch.setenv(name, value)
    client = s3_client(seaweed)
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return client


def argo_archive(tmp_path: Path, files: dict[str, bytes]) -> bytes:
    """A run directory archived as Argo's executor does for an output artifact at /work/run: `run/...`."""
    run = tmp_path / "pod" / "run"
    (run / "sub").mkdir(parents=True)
    for name, data in files.items():
        (run / name).write_bytes(data)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(run, arcname="run")
    return buffer.getvalue()


def submit(kubeconfig: Path, out: Path, *extra: str) -> int:
    return main(
        [
            *("submit", "--entrypoint", CANDIDATE_ENTRYPOINT, "--namespace", "ml"),
            *("--kubeconfig", str(kubeconfig), "--param", "recipe=default", "--param", f"dataset={DATASET}"),
            *("--wait", "--poll", "0.01", "--timeout", "20", "--fetch-run", str(out), "--bucket", BUCKET),
            *extra,
        ]
    )


def test_submit_waits_through_running_and_fetches_the_run(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    api.statuses = [
        {},  # just created: the controller has not seen it yet
        running("0/3", "prep"),
        503,  # an API server restarting mid-wait: retried, not fatal
        running("1/3", "train"),
        running("1/3", "train"),
        running("2/3", "evaluate"),
        {"phase": "Succeeded", "progress": "3/3", "nodes": {}},
    ]
    s3.put_object(Bucket=BUCKET, Key=run_key(NAME, "evaluate"), Body=argo_archive(tmp_path, RUN_FILES))
    out = tmp_path / "run"
    assert submit(kubeconfig, out) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == RUN_FILES
    (body,) = api.created
    assert body["spec"]["entrypoint"] == CANDIDATE_ENTRYPOINT
    assert {p["name"]: p["value"] for p in body["spec"]["arguments"]["parameters"]} == {
        "recipe": "default",
        "dataset": DATASET,
    }
    assert api.gets == 7
    log = capsys.readouterr().out
    progress = re.findall(rf"workflow ml/{NAME}: (.*) \(\d+ s\)", log)
    # One line per change (the repeated train status prints once), the API error reported and retried.
    assert progress == [
        "Pending",
        "Running 0/3 running: prep",
        "Running 1/3 running: train",
        "Running 2/3 running: evaluate",
        "Succeeded 3/3",
    ], log
    assert "answered 503" in log and f"fetched 3 files of {NAME}" in log


@pytest.mark.parametrize("phase", ["Failed", "Error"])
def test_a_failed_workflow_exits_non_zero_with_its_phase_and_message(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], phase: str
) -> None:
    api, kubeconfig = kube
    failed_node = {
        "displayName": "train",
        "type": "Pod",
        "phase": phase,
        "message": "OOMKilled (exit code 137)",
    }
    api.statuses = [
        running("0/3", "prep"),
        {"phase": phase, "message": "child 'forkcast-retrain-t7x2k-2' failed", "nodes": {"n": failed_node}},
    ]
    out = tmp_path / "run"
    assert submit(kubeconfig, out) == 1
    err = capsys.readouterr().err
    assert (
        f"workflow ml/{NAME} ended after" in err
        and f"{phase}: child 'forkcast-retrain-t7x2k-2' failed" in err
    )
    assert "step train: OOMKilled (exit code 137)" in err
    assert not out.exists(), "nothing is fetched from a failed run"


def test_a_workflow_still_running_at_the_timeout_fails_the_job(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    api.statuses = [running("1/3", "train")]
    assert submit(kubeconfig, tmp_path / "run", "--timeout", "0.3") == 1
    err = capsys.readouterr().err
    assert "still Running 1/3 running: train after 0 s (timeout)" in err
    # Nobody consumes the run of a job that gave up: the Workflow is stopped as `argo stop` would.
    assert "stopped it (spec.shutdown=Stop)" in err
    assert api.patches == [("application/merge-patch+json", {"spec": {"shutdown": "Stop"}})]


def test_keep_on_timeout_leaves_the_workflow_running_and_says_how_to_stop_it(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    api.statuses = [running("1/3", "train")]
    assert submit(kubeconfig, tmp_path / "run", "--timeout", "0.3", "--keep-on-timeout") == 1
    assert f"argo stop -n ml {NAME}" in capsys.readouterr().err and api.patches == []


def test_a_deleted_workflow_ends_the_wait_at_once(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    api.statuses = [running("0/3", "prep"), 404]
    assert submit(kubeconfig, tmp_path / "run") == 1
    assert "the Kubernetes API answered 404" in capsys.readouterr().err
    assert api.gets == 2, "a 404 is not retried"


def test_a_missing_artifact_bucket_stops_before_anything_is_submitted(
    kube: tuple[FakeApi, Path], s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    code = main(
        [
            *("submit", "--namespace", "ml", "--kubeconfig", str(kubeconfig), "--wait"),
            *("--param", f"dataset={DATASET}"),
            *("--fetch-run", str(tmp_path / "run"), "--bucket", "no-such-bucket"),
        ]
    )
    assert code == 2
    assert "not submitted: artifact bucket no-such-bucket does not exist" in capsys.readouterr().err
    assert api.created == []


def test_a_run_without_a_dataset_is_refused_before_anything_is_submitted(
    kube: tuple[FakeApi, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = kube
    with pytest.raises(SystemExit) as stopped:
        main(["submit", "--namespace", "ml", "--kubeconfig", str(kubeconfig), "--param", "recipe=default"])
    assert stopped.value.code == 2
    assert "workflow parameter(s) dataset required" in capsys.readouterr().err
    assert api.created == []


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (None, "no run directory at s3://argo-artifacts/forkcast-runs/forkcast-retrain-t7x2k/evaluate.tgz"),
        (b"not a tarball", "is not a readable run archive"),
        ("escape", "outside run/"),
        ("link", "is not a readable run archive"),
    ],
    ids=["absent", "corrupt", "outside-run", "link-out"],
)
def test_fetch_refuses_a_run_it_cannot_trust(
    kube: tuple[FakeApi, Path],
    s3: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stored: bytes | str | None,
    message: str,
) -> None:
    api, kubeconfig = kube
    api.statuses = [{"phase": "Succeeded", "progress": "3/3"}]
    if stored is not None:
        body = stored if isinstance(stored, bytes) else _hostile(stored)
        s3.put_object(Bucket=BUCKET, Key=run_key(NAME, "evaluate"), Body=body)
    assert submit(kubeconfig, tmp_path / "run") == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "evil").exists()


def _hostile(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if kind == "escape":
            info = tarfile.TarInfo("../evil")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        else:  # a link inside run/ pointing out of the destination
            info = tarfile.TarInfo("run/model.pt")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def test_fetch_by_hand_brings_back_a_finished_run(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(Bucket=BUCKET, Key=run_key(NAME, "train"), Body=argo_archive(tmp_path, {"model.pt": b"w"}))
    out = tmp_path / "again"
    assert main(["fetch", NAME, "--step", "train", "--out", str(out), "--bucket", BUCKET]) == 0
    assert (out / "model.pt").read_bytes() == b"w"
