"""publish: check a finished run, add the serving form and data profile, upload it as an immutable S3 version.

The version's manifest.json records the dataset snapshot the run trained on (``dataset``: URI, lake version,
fingerprint, from prep.json), and so do the MLflow model version's tags (data_uri, data_version).

Order matters: everything is validated and the MLflow run exists before the first byte goes to S3; the S3
version is complete (manifest written) before MLflow hears of it. A failure anywhere leaves nothing visible: an
S3 upload cut short has no manifest, and an MLflow registration that fails leaves a complete S3 version that is
simply not yet the challenger (publishing again is refused; register it by hand or publish a new run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkcast_contract.dataset import read_manifest
from forkcast_contract.features import feature_schema_hash
from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE, REQUIRED_METRICS, SCALER_FILE
from forkcast_contract.registry_format import DATA_PROFILE_FILE, GATE_REPORT_FILE, GATE_REPORT_MD_FILE
from forkcast_registry.publish import build_manifest, new_version_id, publish_version
from forkcast_registry.registry import ModelRegistry
from forkcast_retrain.drift import data_profile
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import load_prepared
from forkcast_retrain.serving_form import write_serving_form
from forkcast_retrain.snapshot import mlflow_params, read_snapshot
from forkcast_retrain.tracking import Tracker

RELEASE_DIR = "release"  # RUN/release/: the generated files that go into the version besides the run's own
PUBLISHED_FILE = "published.json"


@dataclass(frozen=True)
class Published:
    version: str
    uri: str
    manifest_sha256: str
    model_sha256: str
    mlflow_version: str | None


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise DataError(
            f"{run_dir} has no {METRICS_FILE}: run `forkcast-retrain evaluate --out {run_dir}` first"
        )
    try:
        metrics: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not JSON: {exc}") from exc
    missing = [k for k in (*REQUIRED_METRICS, "data_fingerprint", "code_revision") if k not in metrics]
    if missing:
        raise DataError(f"{path} lacks required fields: {', '.join(missing)}")
    return metrics


def gate_verdict(run_dir: Path) -> bool | None:
    """The gate's decision on this run if the gate ran (gate_report.json), else None."""
    path = run_dir / GATE_REPORT_FILE
    return bool(json.loads(path.read_text())["passed"]) if path.is_file() else None


def release_files(run_dir: Path) -> dict[str, Path]:
    """Validate the run and write the serving form and data profile; the files of the version by name."""
    metrics = read_metrics(run_dir)
    prepared = load_prepared(run_dir)
    if metrics.get("feature_schema_hash", feature_schema_hash()) != feature_schema_hash():
        raise DataError(f"{run_dir} was trained on another feature layout")
    out = run_dir / RELEASE_DIR
    files = {
        MODEL_FILE: run_dir / MODEL_FILE,
        SCALER_FILE: run_dir / SCALER_FILE,
        METRICS_FILE: run_dir / METRICS_FILE,
    }
    files.update(write_serving_form(files[MODEL_FILE], files[SCALER_FILE], prepared, out))
    label_rate = read_manifest(Path(prepared.info["data_dir"])).click_rate.get("train", float("nan"))
    (out / DATA_PROFILE_FILE).write_text(json.dumps(data_profile(prepared, label_rate)))
    files[DATA_PROFILE_FILE] = out / DATA_PROFILE_FILE
    for name in (GATE_REPORT_FILE, GATE_REPORT_MD_FILE):
        if (run_dir / name).is_file():
            files[name] = run_dir / name
    return files


def run_publish(
    run_dir: Path, registry: ModelRegistry, tracker: Tracker | None, create_bucket: bool = False
) -> Published:
    """Publish ``run_dir`` as a new version; refuses a run whose gate failed."""
    passed = gate_verdict(run_dir)
    if passed is False:
        raise DataError(f"{run_dir}: the gate failed ({GATE_REPORT_FILE}); a failed model is not published")
    files = release_files(run_dir)
    metrics = read_metrics(run_dir)
    snapshot = read_snapshot(run_dir)
    registry.store.ensure_bucket(create=create_bucket)
    run_id = tracker.ensure_run(run_dir) if tracker else None
    draft = build_manifest(
        registry,
        "19700101T000000Z-00000000",
        files,
        data_fingerprint=str(metrics["data_fingerprint"]),
        code_revision=str(metrics["code_revision"]),
        feature_schema_hash=feature_schema_hash(),
        metrics={k: float(metrics[k]) for k in REQUIRED_METRICS},
        gate_passed=passed,
        dataset=snapshot,
    )
    model_sha = draft.files[MODEL_FILE].sha256
    version = new_version_id(draft.data_fingerprint, draft.code_revision, model_sha)
    manifest = draft.model_copy(update={"version": version})
    digest = publish_version(registry, manifest, files)
    uri = registry.uri(version)
    mlflow_version = None
    if tracker and run_id:
        tags = {
            "s3_uri": uri,
            "model_sha256": model_sha,
            "manifest_sha256": digest.sha256,
            "data_fingerprint": manifest.data_fingerprint,
            "code_revision": manifest.code_revision,
            **mlflow_params(snapshot),
        }
        mlflow_version = tracker.register(run_id, version, uri, tags)
    result = Published(version, uri, digest.sha256, model_sha, mlflow_version)
    (run_dir / PUBLISHED_FILE).write_text(json.dumps(result.__dict__, indent=2))
    return result
