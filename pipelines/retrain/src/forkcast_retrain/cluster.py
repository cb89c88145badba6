"""Waiting for a retraining Workflow on the cluster, and fetching the run directory it left in S3.

What the GitLab job `train-on-cluster` (TRAIN_EXECUTOR=argo) does once it submitted the Workflow: poll
the Workflow through the Kubernetes API until it finishes (a progress line whenever something changes, at least
once a minute), then download the run directory its last step wrote to the artifact repository (key scheme:
`forkcast_retrain.workflow_layout.run_key`) and unpack it into the job's $RUN_DIR, which gate > publish > promote use as
if the CI jobs had trained. Everything that can be checked before submitting (Kubernetes credentials, the bucket)
is checked first, so a misconfigured job fails in seconds instead of after hours of training.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from forkcast_registry.errors import BucketMissingError, RegistryError
from forkcast_registry.s3 import S3Store
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.errors import DataError
from forkcast_retrain.workflow_layout import CANDIDATE_STEPS, RUN_PATH, run_key

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
FAILED_PHASES = frozenset({"Failed", "Error"})
# Kubernetes API answers a poll retries instead of failing a job that has waited an hour for training: an API
# server restarting or throttling. Anything else (403, 404: the Workflow was deleted) ends the wait at once.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})
HEARTBEAT_S = 60.0


class ClusterConfigError(RuntimeError):
    """Something needed to run on the cluster is missing or wrong; raised before anything is submitted."""


class WorkflowFailedError(RuntimeError):
    """The Workflow ended Failed/Error, or did not finish in time; the message says which and why."""


class WorkflowTimeoutError(WorkflowFailedError):
    """The Workflow was still running when the wait ran out."""


def api_client(kubeconfig: Path | None) -> Any:
    """The Kubernetes API client of ``kubeconfig``, $KUBECONFIG / ~/.kube/config, or the pod's service account."""
    from kubernetes import client, config  # optional extra `workflows`

    try:
        if kubeconfig is None and config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
            config.load_incluster_config()  # type: ignore[no-untyped-call]  # kubernetes ships these untyped
        else:
            config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise ClusterConfigError(
            "no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG (in GitLab a file-type CI/CD variable)"
            f" or run in a pod whose service account may create workflows ({exc})"
        ) from exc
    return client.ApiClient()


def artifact_store(bucket: str) -> S3Store:
    """The artifact repository's bucket, through the registry's S3 client (S3_ENDPOINT_URL, AWS_* variables)."""
    if not bucket:
        raise ClusterConfigError(
            "no artifact bucket: pass --bucket (the bucket of the cluster's artifact repository, ConfigMap"
            " artifact-repositories key forkcast-s3; ARGO_ARTIFACT_BUCKET in CI)"
        )
    store = S3Store.from_settings(RegistrySettings().model_copy(update={"bucket": bucket}))
    try:
        store.ensure_bucket(create=False)
    except BucketMissingError as exc:
        raise ClusterConfigError(
            f"artifact bucket {bucket} does not exist at {store.endpoint}: it must be the bucket of the"
            " cluster's artifact repository (ConfigMap artifact-repositories, key forkcast-s3)"
        ) from exc
    return store


def describe(wf: dict[str, Any]) -> str:
    """One line: the phase, Argo's progress (done/total steps) and the steps running now."""
    status = wf.get("status") or {}
    running = sorted(
        str(n.get("displayName", n.get("name", "?")))
        for n in (status.get("nodes") or {}).values()
        if n.get("type") == "Pod" and n.get("phase") == "Running"
    )
    parts = [str(status.get("phase") or "Pending")]
    if status.get("progress"):
        parts.append(str(status["progress"]))
    if running:
        parts.append(f"running: {', '.join(running)}")
    return " ".join(parts)


def failure(wf: dict[str, Any]) -> str:
    """The Workflow's message and each failed step's own (a step's message names the exit code or the OOM kill)."""
    status = wf.get("status") or {}
    lines = [f"{status.get('phase')}: {status.get('message') or 'no message'}"]
    lines.extend(
        f"  step {node.get('displayName')}: {node.get('message') or node.get('phase')}"
        for node in (status.get("nodes") or {}).values()
        if node.get("type") == "Pod" and node.get("phase") in FAILED_PHASES
    )
    return "\n".join(lines)


def wait_for(
    api: Any,
    namespace: str,
    name: str,
    *,
    timeout_s: float,
    poll_s: float = 15.0,
    max_api_errors: int = 5,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the Workflow until it succeeds (returned), fails or ``timeout_s`` passes (WorkflowFailedError)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    custom = client.CustomObjectsApi(api)
    where = f"workflow {namespace}/{name}"
    start = clock()
    last_line, last_log, errors = "", start, 0
    while True:
        elapsed = clock() - start
        wf: dict[str, Any] | None = None
        try:
            answer: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            wf, errors = dict(answer), 0
        except (ApiException, HTTPError, OSError) as exc:
            errors += 1
            status = exc.status if isinstance(exc, ApiException) else None
            what = f"{status} {exc.reason}" if isinstance(exc, ApiException) else f"unreachable ({exc})"
            if (status is not None and status not in _TRANSIENT) or errors > max_api_errors:
                raise WorkflowFailedError(
                    f"{where}: the Kubernetes API answered {what} ({errors} in a row)"
                ) from exc
            log(f"{where}: the Kubernetes API answered {what}; retrying ({errors}/{max_api_errors})")
        if wf is not None:
            phase = (wf.get("status") or {}).get("phase")
            line = describe(wf)
            if line != last_line or clock() - last_log >= HEARTBEAT_S:
                log(f"{where}: {line} ({elapsed:.0f} s)")
                last_line, last_log = line, clock()
            if phase == "Succeeded":
                return wf
            if phase in FAILED_PHASES:
                raise WorkflowFailedError(f"{where} ended after {elapsed:.0f} s, {failure(wf)}")
        if elapsed >= timeout_s:
            raise WorkflowTimeoutError(
                f"{where} still {last_line or 'unknown'} after {timeout_s:.0f} s (timeout)"
            )
        sleep(min(poll_s, max(timeout_s - elapsed, 0.0)))


def stop(api: Any, namespace: str, name: str) -> None:
    """What `argo stop` does: ``spec.shutdown: Stop`` (running steps terminated, exit handlers still run)."""
    from kubernetes import client

    body = {"spec": {"shutdown": "Stop"}}
    client.CustomObjectsApi(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)


def _give_up(api: Any, namespace: str, name: str, keep: bool) -> str:
    """After a timed-out wait: stop the Workflow (nobody will read its result) unless told to keep it."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    by_hand = f"`argo stop -n {namespace} {name}`"
    if keep:
        return f"it keeps running (--keep-on-timeout); stop it with {by_hand} if its result is not wanted"
    try:
        stop(api, namespace, name)
    except (ApiException, HTTPError, OSError) as exc:
        what = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
        return f"stopping it failed ({what}): it may still be running; stop it with {by_hand}"
    return "stopped it (spec.shutdown=Stop): its running steps are terminated"


def fetch_run(store: S3Store, workflow_name: str, out: Path, step_name: str = "") -> list[Path]:
    """Unpack the run directory step ``step_name`` (default: the candidate's last) left in S3 into ``out``.

    Argo archives a directory artifact as a .tgz whose entries sit under the directory's own name (`run/...`);
    that prefix is stripped, and every entry is extracted with tarfile's `data` filter (no links out, no
    absolute paths). Returns the files written.
    """
    key = run_key(workflow_name, step_name or CANDIDATE_STEPS[-1].name)
    body = store.get(key)
    if body is None:
        raise DataError(
            f"no run directory at s3://{store.bucket}/{key} ({store.endpoint}): did workflow {workflow_name}"
            " finish, and is this the bucket of the cluster's artifact repository?"
        )
    root = PurePosixPath(RUN_PATH).name
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if not parts or parts[0] != root:
                    raise DataError(f"s3://{store.bucket}/{key}: entry {member.name!r} is outside {root}/")
                if len(parts) == 1:
                    continue  # the directory itself
                rel = PurePosixPath(*parts[1:])
                tar.extract(member.replace(name=str(rel), deep=False), out, filter="data")
                if member.isfile():
                    written.append(out / rel)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"s3://{store.bucket}/{key} is not a readable run archive: {exc}") from exc
    if not written:
        raise DataError(f"s3://{store.bucket}/{key} holds no files")
    return sorted(written)


def _log(line: str) -> None:
    print(line, flush=True)


def create_workflow(api_client: Any, namespace: str, manifest: dict[str, Any]) -> str:
    """Create the Workflow ``manifest`` through the Kubernetes API (Argo's controller picks it up); its name."""
    from kubernetes import client  # optional extra `workflows`: only submitting needs it

    api = client.CustomObjectsApi(api_client)
    created = api.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflows", manifest)
    if not isinstance(created, dict):
        raise RuntimeError(f"the API answered {type(created).__name__}, not the created object")
    return str(created["metadata"]["name"])


def submit_command(args: Any, manifest: dict[str, Any]) -> int:
    """`workflow submit` of ``manifest`` (built and checked by ``workflow.workflow``): check what can be checked,
    submit, then optionally wait and fetch the run."""
    from kubernetes.client.exceptions import ApiException

    try:
        if args.fetch_run and not args.bucket:
            raise ClusterConfigError("--fetch-run needs --bucket (ARGO_ARTIFACT_BUCKET in CI)")
        api = api_client(args.kubeconfig)
        store = artifact_store(args.bucket) if args.fetch_run else None
    except (ClusterConfigError, RegistryError) as exc:
        print(f"not submitted: {exc}", file=sys.stderr)
        return 2
    try:
        name = create_workflow(api, args.namespace, manifest)
    except ApiException as exc:
        print(
            f"not submitted: the Kubernetes API answered {exc.status} {exc.reason}: {exc.body}",
            file=sys.stderr,
        )
        return 2
    _log(f"submitted workflow {args.namespace}/{name} (entrypoint {args.entrypoint})")
    if not args.wait:
        return 0
    try:
        wait_for(api, args.namespace, name, timeout_s=args.timeout, poll_s=args.poll, log=_log)
    except WorkflowTimeoutError as exc:
        # Why stop it: the job that waited fails here, so nothing consumes the run, and a training step left
        # running would hold its node for hours.
        print(f"{exc}; {_give_up(api, args.namespace, name, args.keep_on_timeout)}", file=sys.stderr)
        return 1
    except WorkflowFailedError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        if store is not None:
            files = fetch_run(store, name, args.fetch_run)
            _log(f"fetched {len(files)} files of {name} into {args.fetch_run}")
    except (DataError, RegistryError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def fetch_command(bucket: str, workflow_name: str, out: Path, step_name: str) -> int:
    """`workflow fetch`: the run directory of a Workflow that already finished."""
    try:
        files = fetch_run(artifact_store(bucket), workflow_name, out, step_name)
    except (ClusterConfigError, DataError, RegistryError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _log(f"fetched {len(files)} files of {workflow_name} into {out}")
    return 0
