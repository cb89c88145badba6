"""Loading the served model: from the registry (download + verify) or a local directory, folded and probe-checked.

The service never imports torch (≈700 MB less image, faster start): it reads the serving form published with the
version (weights .npz, scaler.npz, probe inputs with the TorchScript scores) and refuses a model whose folded
logits differ from TorchScript's on the probe set by more than PROBE_TOLERANCE.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE, SCALER_FILE
from forkcast_contract.registry_format import (
    MANIFEST_FILE,
    MODELS_PREFIX,
    PROBE_FILE,
    PROBE_TOLERANCE,
    SERVING_WEIGHTS_FILE,
    VersionManifest,
    probe_gap,
)
from forkcast_inference.folded import FoldedModel, ModelFormatError
from forkcast_inference.settings import InferenceSettings


class ModelLoadError(RuntimeError):
    """The configured model cannot be served (missing, tampered, wrong shape or failing the probe check)."""


@dataclass(frozen=True)
class Provenance:
    """What is served, for /version and the info metric."""

    model_version: str
    model_uri: str
    model_sha256: str
    data_fingerprint: str
    code_revision: str
    feature_schema_hash: str
    # Test-set ROC-AUC at training (manifest metrics / metrics.json): what the online AUC is compared to.
    offline_auc: float | None = None


@dataclass(frozen=True)
class LoadedModel:
    folded: FoldedModel
    provenance: Provenance
    probe_max_abs_diff: float


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``s3://<bucket>/models/<name>/<version>/`` → (bucket, name, version)."""
    parsed = urlparse(uri)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "s3" or not parsed.netloc or len(parts) != 3 or parts[0] != MODELS_PREFIX:
        raise ModelLoadError(f"model URI {uri!r} is not s3://<bucket>/{MODELS_PREFIX}/<name>/<version>/")
    return parsed.netloc, parts[1], parts[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def probe_check(folded: FoldedModel, probe_path: Path) -> float:
    """``probe_gap`` against the TorchScript scores stored with the version; raises above the tolerance."""
    with np.load(probe_path) as z:
        inputs, scores = z["inputs"].astype(np.float64), z["scores"].astype(np.float64)
    if inputs.ndim != 2 or len(inputs) == 0 or len(inputs) != len(scores):
        raise ModelLoadError(
            f"{probe_path.name}: inputs {inputs.shape} and scores {scores.shape} do not match"
        )
    gap = probe_gap(folded.logits_rows(inputs), scores)
    if not gap <= PROBE_TOLERANCE:
        raise ModelLoadError(
            f"folded model differs from the TorchScript scores by {gap:.3g} on the probe set "
            f"(max {PROBE_TOLERANCE}): refusing to serve it"
        )
    return gap


def load_files(directory: Path, provenance: Provenance) -> LoadedModel:
    """Fold the serving form in ``directory`` and check it against its probe set."""
    try:
        with np.load(directory / SERVING_WEIGHTS_FILE) as z:
            weights = {k: z[k] for k in z.files}
        with np.load(directory / SCALER_FILE) as z:
            mean, std = z["mean"].astype(np.float64), z["std"].astype(np.float64)
        folded = FoldedModel.fold(weights, mean, std)
        gap = probe_check(folded, directory / PROBE_FILE)
    # A truncated .npz is a BadZipFile (not an OSError): uncaught, it crashed the service at startup instead of
    # leaving it unready with the reason (found by the fault drill localplatform/tests/e2e/test_faults.py).
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, ModelFormatError) as exc:
        raise ModelLoadError(f"cannot read the serving form in {directory}: {exc}") from exc
    return LoadedModel(folded, provenance, gap)


def _from_registry(settings: InferenceSettings) -> LoadedModel:
    # Imported here: boto3 is only needed when the model comes from S3.
    from forkcast_registry.errors import RegistryError
    from forkcast_registry.registry import ModelRegistry
    from forkcast_registry.s3 import S3Store
    from forkcast_registry.settings import RegistrySettings

    bucket, name, version = parse_model_uri(settings.model_uri)
    if settings.model_version and settings.model_version != version:
        raise ModelLoadError(f"FORKCAST_MODEL_VERSION={settings.model_version} but the URI names {version}")
    # The URI names bucket and model; S3 endpoint, credentials and cache come from the environment.
    reg_settings = RegistrySettings().model_copy(update={"bucket": bucket, "model_name": name})
    registry = ModelRegistry(S3Store.from_settings(reg_settings), name, reg_settings.cache_dir)
    try:
        local = registry.download(version, settings.model_manifest_sha256 or None)
    except RegistryError as exc:
        raise ModelLoadError(f"cannot fetch {settings.model_uri}: {exc}") from exc
    manifest = local.manifest
    model_sha = manifest.files[MODEL_FILE].sha256 if MODEL_FILE in manifest.files else ""
    if settings.model_sha256 and settings.model_sha256 != model_sha:
        raise ModelLoadError(
            f"{MODEL_FILE} sha256 {model_sha[:12]}… is not the pinned {settings.model_sha256[:12]}…"
        )
    return load_files(local.path, _provenance(manifest, settings.model_uri, model_sha))


def _provenance(manifest: VersionManifest, uri: str, model_sha: str) -> Provenance:
    return Provenance(
        model_version=manifest.version,
        model_uri=uri,
        model_sha256=model_sha,
        data_fingerprint=manifest.data_fingerprint,
        code_revision=manifest.code_revision,
        feature_schema_hash=manifest.feature_schema_hash,
        offline_auc=_offline_auc(manifest.metrics),
    )


def _offline_auc(metrics: dict[str, Any]) -> float | None:
    value = metrics.get("roc_auc")
    return float(value) if isinstance(value, int | float) and 0.0 <= value <= 1.0 else None


def _from_dir(directory: Path) -> LoadedModel:
    """A local copy: manifest.json if present (a cached version), else metrics.json of a training run."""
    if (directory / MANIFEST_FILE).is_file():
        manifest = VersionManifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
        for fname, digest in manifest.files.items():
            if not (directory / fname).is_file() or _sha256(directory / fname) != digest.sha256:
                raise ModelLoadError(f"{directory / fname} does not match its manifest")
        return load_files(
            directory, _provenance(manifest, directory.as_uri(), manifest.files[MODEL_FILE].sha256)
        )
    try:
        metrics = json.loads((directory / METRICS_FILE).read_text())
        provenance = Provenance(
            model_version=f"local-{_sha256(directory / SERVING_WEIGHTS_FILE)[:12]}",
            model_uri=directory.as_uri(),
            model_sha256=_sha256(directory / MODEL_FILE) if (directory / MODEL_FILE).is_file() else "",
            data_fingerprint=str(metrics["data_fingerprint"]),
            code_revision=str(metrics["code_revision"]),
            feature_schema_hash=str(metrics["feature_schema_hash"]),
            offline_auc=_offline_auc(metrics),
        )
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{directory}: no usable {MANIFEST_FILE} or {METRICS_FILE}: {exc}") from exc
    return load_files(directory, provenance)


def load_model(settings: InferenceSettings) -> LoadedModel:
    if settings.model_uri:
        return _from_registry(settings)
    if settings.model_dir is not None:
        return _from_dir(settings.model_dir)
    raise ModelLoadError(
        "no model configured: set FORKCAST_MODEL_URI (or FORKCAST_MODEL_DIR for development)"
    )
