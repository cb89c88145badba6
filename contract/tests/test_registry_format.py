"""The registry format shared by publish (retrain), the registry and load (inference): one definition, so they
cannot disagree: the probe check, the file names a manifest may list, the pins a release must carry."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from forkcast_contract.model_format import MODEL_FILE
from forkcast_contract.registry_format import (
    KNOWN_VERSION_FILES,
    PROBE_TOLERANCE,
    DatasetSnapshot,
    ModelRelease,
    VersionManifest,
    probe_gap,
)


def test_gap_is_absolute_up_to_one_and_relative_above() -> None:
    reference = np.array([0.5, -0.2, 20.0, -40.0])
    assert probe_gap(reference, reference) == 0.0
    # 1.1e-5 on a logit of 20 is float32 rounding of an exact computation: within tolerance (the drill's case).
    assert probe_gap(reference + np.array([0, 0, 1.1e-5, 0]), reference) == pytest.approx(5.5e-7)
    assert probe_gap(reference + np.array([0, 0, 1.1e-5, 0]), reference) <= PROBE_TOLERANCE
    # The same 1.1e-5 on a logit below 1 is not.
    assert probe_gap(reference + np.array([1.1e-5, 0, 0, 0]), reference) > PROBE_TOLERANCE
    # A wrong model is far outside whatever the magnitude.
    assert probe_gap(reference * 1.001, reference) > PROBE_TOLERANCE


def test_gap_of_nan_is_not_within_tolerance() -> None:
    """A NaN logit must fail the ``gap <= tolerance`` checks (NaN compares false), never pass them."""
    gap = probe_gap(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert not gap <= PROBE_TOLERANCE


# --- manifest file names and release pins (issue 18 §6) ---

_DIGEST = {"sha256": "0" * 64, "size": 1}


def _manifest(files: dict[str, dict[str, object]]) -> dict[str, object]:
    return {
        "model_name": "ranknet",
        "version": "20260101T000000Z-0123abcd",
        "created_at": "2026-01-01T00:00:00Z",
        "files": files,
        "data_fingerprint": "d",
        "code_revision": "r",
        "feature_schema_hash": "h",
        "metrics": {"roc_auc": 0.8},
    }


def test_a_manifest_lists_only_known_file_names() -> None:
    known = {name: _DIGEST for name in KNOWN_VERSION_FILES}
    assert set(VersionManifest.model_validate(_manifest(known)).files) == KNOWN_VERSION_FILES
    for name in ("../model.pt", "/etc/passwd", "sub/model.pt", "model.pt.bak", ""):
        with pytest.raises(ValidationError, match=f"lists files no version holds: {re.escape(repr(name))}"):
            VersionManifest.model_validate(_manifest({MODEL_FILE: _DIGEST, name: _DIGEST}))


def test_a_manifest_records_the_dataset_snapshot_and_older_ones_still_load() -> None:
    """Versions published before releases recorded their data load with ``dataset`` None; a recorded snapshot
    survives the JSON round trip the registry makes, and a snapshot without a fingerprint is refused."""
    assert VersionManifest.model_validate(_manifest({MODEL_FILE: _DIGEST})).dataset is None
    snap = {
        "uri": "s3://forkcast-lake/datasets/full",
        "version": 3,
        "fingerprint": "f" * 64,
        "tables": {"users": 2},
    }
    manifest = VersionManifest.model_validate({**_manifest({MODEL_FILE: _DIGEST}), "dataset": snap})
    assert VersionManifest.model_validate_json(manifest.model_dump_json()).dataset == DatasetSnapshot(**snap)
    with pytest.raises(ValidationError, match=r"dataset\.fingerprint\n  Field required"):
        VersionManifest.model_validate(
            {**_manifest({MODEL_FILE: _DIGEST}), "dataset": {"uri": snap["uri"], "version": 3}}
        )


_PINNED = {
    "uri": "s3://forkcast/models/ranknet/20260101T000000Z-0123abcd/",
    "version": "20260101T000000Z-0123abcd",
    "model_sha256": "a" * 64,
    "manifest_sha256": "b" * 64,
}


def test_a_release_naming_a_version_is_pinned() -> None:
    assert ModelRelease(**_PINNED).version == _PINNED["version"]
    assert ModelRelease(uri="", version="", model_sha256="", manifest_sha256="").version == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"manifest_sha256": ""}, "is not pinned: FORKCAST_MODEL_MANIFEST_SHA256 must be a sha256"),
        ({"model_sha256": "A" * 64}, "is not pinned: FORKCAST_MODEL_SHA256 must be a sha256"),
        (
            {"uri": "s3://forkcast/models/ranknet/20250101T000000Z-ffffffff/"},
            "is not the directory of version",
        ),
        ({"version": ""}, "no version, yet a URI or sha256 is set"),
    ],
    ids=["no-manifest-pin", "bad-model-pin", "other-uri", "pins-without-version"],
)
def test_a_release_without_its_pins_is_refused(change: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ModelRelease(**{**_PINNED, **change})
