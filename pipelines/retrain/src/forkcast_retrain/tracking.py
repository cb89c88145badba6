"""MLflow tracking and model registry for the release steps (SPEC §4).

One MLflow run per run directory (its id kept in ``RUN/mlflow_run.json``): params (the hyper-parameters and the
dataset snapshot it trained on: data_uri, data_version, data_fingerprint), per-epoch metrics and the artifacts of
training, then the gate's decision. Publish registers an MLflow model version pointing at the S3
version (tags: S3 URI, sha256 of model.pt, data fingerprint, code revision) and moves the ``challenger`` alias;
``sync-champion`` moves ``champion`` once the prod overlay in Git releases a version (the job after the prod merge
request is merged, never before anyone approved), and ``rollback`` moves the aliases back after
its push. The S3 registry stays the source of truth for the bytes; MLflow is the index people browse. With no
``MLFLOW_TRACKING_URI`` a local file store is used, and the log says so.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE, SCALER_FILE, TRAIN_LOG_FILE
from forkcast_retrain.snapshot import mlflow_params, read_snapshot

T = TypeVar("T")
EXPERIMENT = "forkcast-retrain"
REGISTERED_MODEL = "forkcast-ranknet"
RUN_FILE = "mlflow_run.json"
CHALLENGER, CHAMPION = "challenger", "champion"
VERSION_TAG = "forkcast.version"  # the S3 registry version id an MLflow model version stands for
# When a version last became champion (Unix ms): the champion history the gate bounds ε against (gate_policy).
CHAMPION_SINCE_TAG = "forkcast.champion_since"
# Set by rollback (move_aliases) on a version whose canary aborted, with where and why: no longer a champion the gate
# measures a challenger against.
ROLLED_BACK_TAG = "forkcast.rolled_back"
# MLflow's own defaults retry an unreachable server for minutes (7 retries, backoff factor 2: one `gate` against a
# stopped server hung for over 100 s, measured by the fault drill in localplatform/tests/e2e/test_faults.py). A release
# step fails in seconds instead, says so, and is run again once MLflow answers: the run directory holds everything
# the MLflow run is built from, so nothing is lost. Set the variables to override.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# What MLflow answers for an absent registered model or alias (as opposed to a server it cannot reach).
_ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    local = Path.cwd() / "mlruns"
    # A plain directory needs no database driver (mlflow-skinny has none); MLflow 3 asks for this opt-in.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    print(f"MLFLOW_TRACKING_URI is not set: tracking into the local file store {local}", file=sys.stderr)
    return local.as_uri()


@dataclass
class Tracker:
    client: MlflowClient
    uri: str

    @classmethod
    def from_env(cls) -> Tracker:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        uri = tracking_uri()
        return cls(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        return str(exp.experiment_id) if exp is not None else str(self.client.create_experiment(EXPERIMENT))

    def ensure_run(self, run_dir: Path) -> str:
        """The MLflow run of ``run_dir``, created (and filled from metrics.json) on first use."""
        marker = run_dir / RUN_FILE
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("tracking_uri") == self.uri:
                return str(saved["run_id"])
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        snapshot = read_snapshot(run_dir)
        run = self.client.create_run(self._experiment_id(), run_name=run_dir.resolve().name)
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        params = [Param(k, str(v)) for k, v in sorted(metrics.get("hyperparameters", {}).items())]
        params += [
            Param("data_fingerprint", str(metrics.get("data_fingerprint"))),
            Param("code_revision", str(metrics.get("code_revision"))),
            *(Param(k, v) for k, v in sorted(mlflow_params(snapshot).items())),
        ]
        series = [
            Metric(key, float(value), now, int(entry.get("epoch", step + 1)))
            for step, entry in enumerate(metrics.get("epochs", []))
            for key, value in entry.items()
            if key != "epoch" and isinstance(value, int | float)
        ]
        final = [
            Metric(k, float(metrics[k]), now, 0) for k in ("roc_auc", "accuracy", "logloss") if k in metrics
        ]
        self.client.log_batch(run_id, metrics=series + final, params=params)
        for name in (METRICS_FILE, TRAIN_LOG_FILE, SCALER_FILE, MODEL_FILE):
            if (run_dir / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / name), "model" if name == MODEL_FILE else None)
        self.client.set_terminated(run_id)
        marker.write_text(json.dumps({"tracking_uri": self.uri, "run_id": run_id}))
        return run_id

    def log_gate(self, run_id: str, passed: bool, values: dict[str, float], reports: list[Path]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(f"gate.{k}", v, now, 0) for k, v in sorted(values.items())]
        )
        self.client.set_tag(run_id, "gate", "passed" if passed else "failed")
        for path in reports:
            self.client.log_artifact(run_id, str(path), "gate")

    def register(self, run_id: str, version: str, s3_uri: str, tags: dict[str, str]) -> str:
        """Register the S3 version as an MLflow model version with ``tags`` and point ``challenger`` at it."""
        try:
            self.client.create_registered_model(REGISTERED_MODEL)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(
            REGISTERED_MODEL, source=s3_uri, run_id=run_id, tags={VERSION_TAG: version, **tags}
        )
        self.client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, mv.version)
        return str(mv.version)

    def model_version_of(self, version: str) -> str | None:
        """The MLflow model version number registered for an S3 version id, if any."""
        try:
            found = self.client.search_model_versions(f"name='{REGISTERED_MODEL}'")
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return None
            raise
        for mv in found:
            if mv.tags.get(VERSION_TAG) == version:
                return str(mv.version)
        return None

    def alias_version(self, alias: str) -> str | None:
        """The S3 version id the alias points at, or None (no registered model or no such alias)."""
        try:
            mv = self.client.get_model_version_by_alias(REGISTERED_MODEL, alias)
        except MlflowException as exc:
            # Only "there is none" means no champion: an unreachable MLflow must not make the gate skip the
            # champion comparison.
            if exc.error_code in _ABSENT:
                return None
            raise
        return mv.tags.get(VERSION_TAG)

    def set_alias(self, alias: str, version: str) -> bool:
        """Point ``alias`` at the MLflow model version of ``version``; False when it was never registered.

        Moving ``champion`` also stamps the version with CHAMPION_SINCE_TAG (sync-champion and a prod rollback
        both come through here), which is the champion history ``recent_champions`` reads.
        """
        number = self.model_version_of(version)
        if number is None:
            return False
        self.client.set_registered_model_alias(REGISTERED_MODEL, alias, number)
        if alias == CHAMPION:
            now = str(int(time.time() * 1000))
            self.client.set_model_version_tag(REGISTERED_MODEL, number, CHAMPION_SINCE_TAG, now)
        return True

    def recent_champions(self, n: int) -> list[str]:
        """The S3 versions that were champion most recently, newest first, at most ``n``; rolled-back ones left
        out (a canary that aborted is no bar to measure a challenger against)."""
        try:
            found = self.client.search_model_versions(f"name='{REGISTERED_MODEL}'")
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return []
            raise
        stamped = [
            (int(mv.tags[CHAMPION_SINCE_TAG]), mv.tags[VERSION_TAG])
            for mv in found
            if mv.tags.get(CHAMPION_SINCE_TAG, "").isdigit()
            and VERSION_TAG in mv.tags
            and ROLLED_BACK_TAG not in mv.tags
        ]
        return [version for _, version in sorted(stamped, reverse=True)[:n]]

    def clear_alias_if(self, alias: str, version: str) -> bool:
        """Delete ``alias`` when it points at ``version`` (a challenger whose canary aborted); True if deleted."""
        if self.alias_version(alias) != version:
            return False
        self.client.delete_registered_model_alias(REGISTERED_MODEL, alias)
        return True

    def tag_version(self, version: str, key: str, value: str) -> bool:
        """Tag the MLflow model version of ``version``; False when it was never registered."""
        number = self.model_version_of(version)
        if number is None:
            return False
        self.client.set_model_version_tag(REGISTERED_MODEL, number, key, value)
        return True


def with_retries(
    action: Callable[[], T],
    what: str,
    attempts: int = 5,
    delay_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> T:
    """Run ``action`` until it succeeds, at most ``attempts`` times with a growing pause; re-raise the last error.

    For the alias moves that follow a push: Git already holds the release, so a short MLflow outage must not
    leave the registry pointing elsewhere without a second try.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (MlflowException, OSError) as exc:
            if attempt == attempts:
                raise
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            log(
                f"{what} failed (attempt {attempt}/{attempts}): {first}; retrying in {delay_s * attempt:.0f} s"
            )
            time.sleep(delay_s * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
