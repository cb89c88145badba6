"""Model registry format of SPEC §4: the S3 layout of a version, its manifest, serving form and release file.

The retraining pipeline writes versions, the inference service reads them (without torch) and promotion writes
the release file that the inference pods get as environment variables; defining these once keeps the three in
step. The file names of the trained artifacts themselves are in ``model_format``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE, SCALER_FILE

MODELS_PREFIX: Final = "models"  # s3://<bucket>/models/<model-name>/<version>/
DEFAULT_MODEL_NAME: Final = "ranknet"
MANIFEST_FILE: Final = "manifest.json"  # written last: a version without it is incomplete and invisible

# Serving form (no torch needed to read it): the RankNet's layers as float32 arrays w1, b1, w2, b2, w3, b3
# (torch's Linear layout: weight is out x in), so that standardisation and Linear∘Linear can be folded.
SERVING_WEIGHTS_FILE: Final = "serving_weights.npz"
# Probe set: `inputs` (n x 40 raw, unstandardised float32 features) and `scores` (n float32 logits of the
# TorchScript model.pt on the standardised inputs). A server checks its own computation against these at load.
PROBE_FILE: Final = "probe.npz"
PROBE_TOLERANCE: Final = 1e-5  # max probe_gap a serving implementation may show on the probe set
# Reference statistics of the training data (per-feature quantile bins and proportions, label rate), so that a
# later gate can measure drift against this version without the old dataset.
DATA_PROFILE_FILE: Final = "data_profile.json"
GATE_REPORT_FILE: Final = "gate_report.json"
GATE_REPORT_MD_FILE: Final = "gate_report.md"

# Every file of a version, in upload order; the manifest follows them.
VERSION_FILES: Final[tuple[str, ...]] = (
    MODEL_FILE,
    SCALER_FILE,
    METRICS_FILE,
    SERVING_WEIGHTS_FILE,
    PROBE_FILE,
    DATA_PROFILE_FILE,
)
OPTIONAL_VERSION_FILES: Final[tuple[str, ...]] = (GATE_REPORT_FILE, GATE_REPORT_MD_FILE)
# The only names a manifest may list: a reader writes each listed file under the version's directory, so a forged
# manifest naming `../x`, an absolute path or a file no writer produces is refused when it is parsed, before
# anything is downloaded.
KNOWN_VERSION_FILES: Final[frozenset[str]] = frozenset(VERSION_FILES + OPTIONAL_VERSION_FILES)
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")

# Sortable and unique: UTC time to the second, then 8 hex of a hash of data fingerprint, code and model.
VERSION_PATTERN: Final = r"^\d{8}T\d{6}Z-[0-9a-f]{8}$"
_VERSION_RE: Final = re.compile(VERSION_PATTERN)


def probe_gap(logits: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """Max over the probe set of |Δ logit| / max(1, |reference logit|): absolute for logits up to 1, relative above.

    Why relative: the reference is float32 TorchScript, whose own rounding grows with the logit; a model retrained
    on drifted data (logits in the tens) showed 1.1e-5 absolute between two exact computations and was refused at
    serving after passing at publish (the end-to-end drill). Publish and serving both check with this function.
    """
    ref = np.asarray(reference, dtype=np.float64)
    delta = np.abs(np.asarray(logits, dtype=np.float64) - ref)
    return float((delta / np.maximum(1.0, np.abs(ref))).max())


def is_version(text: str) -> bool:
    """Whether ``text`` is a well-formed version id (protects S3 keys and Git messages from odd input)."""
    return bool(_VERSION_RE.match(text))


def version_time(version: str) -> float | None:
    """Unix time a version was created, read from its id (``YYYYmmddTHHMMSSZ-…``); None if not a version id."""
    if not is_version(version):
        return None
    try:
        stamp = datetime.strptime(version[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return stamp.timestamp()


def version_prefix(model_name: str, version: str) -> str:
    """Object key prefix of one version, with the trailing slash."""
    return f"{MODELS_PREFIX}/{model_name}/{version}/"


def version_uri(bucket: str, model_name: str, version: str) -> str:
    """The ``s3://…/<version>/`` directory URI that promotion writes and the service is configured with."""
    return f"s3://{bucket}/{version_prefix(model_name, version)}"


class FileDigest(BaseModel):
    """sha256 and size of one file of a version."""

    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class DatasetSnapshot(BaseModel):
    """Which data trained a version: the dataset's URI, the lake version prep resolved, its fingerprint.

    ``version`` is the lake dataset version (forkcast_lake: the Delta version of its snapshots table) that
    ``--data-version`` (a number, a time, or nothing for the newest) resolved to, so the same rows can be read again
    by ``--data-version <version>``; ``tables`` the Delta version of each table it consists of. A local directory
    (a developer's run) has no lake version: ``version`` None, ``uri`` its path.
    """

    model_config = ConfigDict(frozen=True)

    uri: str
    version: int | None = None
    fingerprint: str
    tables: dict[str, int] = Field(default_factory=dict)


class VersionManifest(BaseModel):
    """``manifest.json`` of a version: what a reader verifies before loading anything."""

    model_config = ConfigDict(frozen=True)

    format_version: Literal[1] = 1
    model_name: str
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: str
    files: dict[str, FileDigest]
    data_fingerprint: str
    code_revision: str
    feature_schema_hash: str
    metrics: dict[str, float]  # the headline test metrics (REQUIRED_METRICS), copied from metrics.json
    gate_passed: bool | None = None  # None: published without a gate report
    dataset: DatasetSnapshot | None = None  # None: published before releases recorded their snapshot

    @field_validator("files")
    @classmethod
    def _known_file_names(cls, files: dict[str, FileDigest]) -> dict[str, FileDigest]:
        unknown = sorted(name for name in files if name not in KNOWN_VERSION_FILES)
        if unknown:
            raise ValueError(
                f"lists files no version holds: {', '.join(map(repr, unknown))} "
                f"(allowed: {', '.join(sorted(KNOWN_VERSION_FILES))})"
            )
        return files


# The release file (one per kustomize overlay, rewritten only by promotion) is a ConfigMap with this name whose
# data are these environment variables of the inference service.
RELEASE_FILE_NAME: Final = "model-release.yaml"
RELEASE_CONFIGMAP_NAME: Final = "forkcast-model-release"
ENV_MODEL_URI: Final = "FORKCAST_MODEL_URI"
ENV_MODEL_VERSION: Final = "FORKCAST_MODEL_VERSION"
ENV_MODEL_SHA256: Final = "FORKCAST_MODEL_SHA256"  # sha256 of model.pt
ENV_MODEL_MANIFEST_SHA256: Final = "FORKCAST_MODEL_MANIFEST_SHA256"  # pins every file through manifest.json
RELEASE_KEYS: Final[tuple[str, ...]] = (
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    ENV_MODEL_SHA256,
    ENV_MODEL_MANIFEST_SHA256,
)


class ModelRelease(BaseModel):
    """The data of the release ConfigMap; empty strings mean no version has been promoted to that overlay."""

    model_config = ConfigDict(frozen=True)

    uri: str
    version: str
    model_sha256: str
    manifest_sha256: str

    @model_validator(mode="after")
    def _pinned_or_empty(self) -> ModelRelease:
        """A release that names a version pins it: model.pt's and manifest.json's sha256 (64 hex each) and a URI
        ending in that version's directory; the service verifies every file through the pinned manifest. An
        overlay that releases nothing leaves all four empty."""
        if not self.version:
            if self.uri or self.model_sha256 or self.manifest_sha256:
                raise ValueError("no version, yet a URI or sha256 is set")
            return self
        missing = [
            key
            for key, value in (
                (ENV_MODEL_SHA256, self.model_sha256),
                (ENV_MODEL_MANIFEST_SHA256, self.manifest_sha256),
            )
            if not _SHA256_RE.match(value)
        ]
        if missing:
            raise ValueError(
                f"release {self.version} is not pinned: {', '.join(missing)} must be a sha256 (64 hex)"
            )
        if not self.uri.endswith(f"/{self.version}/"):
            raise ValueError(f"{ENV_MODEL_URI} {self.uri!r} is not the directory of version {self.version}")
        return self

    def as_env(self) -> dict[str, str]:
        return dict(
            zip(RELEASE_KEYS, (self.uri, self.version, self.model_sha256, self.manifest_sha256), strict=True)
        )

    @classmethod
    def from_env(cls, data: dict[str, str]) -> ModelRelease:
        missing = [k for k in RELEASE_KEYS if k not in data]
        if missing:
            raise ValueError(f"release data lacks {', '.join(missing)}")
        return cls(
            uri=data[ENV_MODEL_URI],
            version=data[ENV_MODEL_VERSION],
            model_sha256=data[ENV_MODEL_SHA256],
            manifest_sha256=data[ENV_MODEL_MANIFEST_SHA256],
        )
