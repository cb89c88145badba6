"""The release records the lake snapshot it trained on, and every step after prep reads that snapshot from S3.

Against a real SeaweedFS (`weed mini`) and a real MLflow server: the tiny dataset published to the lake, then another
dataset as its newest version, prep reads the *older* version by number, and gate and publish
run as separate CI jobs would: with another dataset cache, prep's folder gone. The gate report, the MLflow run and
model version, and the version's manifest.json all name the URI, the version prep resolved and its fingerprint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkcast_contract.dataset import DatasetSizes, read_manifest
from forkcast_contract.registry_format import GATE_REPORT_FILE, GATE_REPORT_MD_FILE, DatasetSnapshot
from forkcast_data.generate import GenerateRequest, generate
from forkcast_devservers.servers import Mlflow, Seaweed
from forkcast_lake.datasets import publish as lake_publish
from forkcast_lake.settings import get_settings
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.cli import main
from forkcast_retrain.data_source import local_data_dir
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import PREP_DIR, PREP_FILE
from forkcast_retrain.publish import PUBLISHED_FILE
from forkcast_retrain.tracking import REGISTERED_MODEL, Tracker

# The dataset published after tiny: only its fingerprint matters (it must not be what the run reads).
OTHER = DatasetSizes(
    users=500, restaurants=300, train_files=1, test_files=1, rows_per_file=2_000, requests=5, candidates=100
)

LAKE = "forkcast-lake"
URI = f"s3://{LAKE}/datasets/tiny"


@pytest.fixture(scope="module")
def stack(seaweed: Seaweed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The session's SeaweedFS with this module's own MLflow (its registry holds no champion of other modules)."""
    root = tmp_path_factory.mktemp("snapshot-stack")
    seaweed.create_bucket(LAKE)
    seaweed.create_bucket("forkcast-snapshot-models")
    with Mlflow.on(seaweed, root / "mlflow", bucket="snapshot-mlflow") as mlflow:
        env = {
            **seaweed.client_env("forkcast-snapshot-models"),
            "MLFLOW_TRACKING_URI": mlflow.url,
            "FORKCAST_MODEL_CACHE": str(root / "models"),
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            yield env


@pytest.fixture(scope="module")
def published(
    stack: dict[str, str], tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, str]:
    """tiny published as a version of URI, then a drifted dataset as the newest: (tiny's version, its fingerprint)."""
    first = lake_publish(tiny_data, URI)
    drifted = tmp_path_factory.mktemp("drifted") / "data"
    generate(GenerateRequest(out=drifted, preset="micro", sizes=OTHER, progress=False), log=lambda _: None)
    newest = lake_publish(drifted, URI)
    assert newest.version > first.version and newest.fingerprint != first.fingerprint
    return first.version, first.fingerprint


def test_a_release_trained_from_the_lake_records_the_snapshot_it_read(
    published: tuple[int, str], tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version, fingerprint = published
    run = tmp_path / "run"
    # The prep job: its own dataset cache.
    monkeypatch.setenv("FORKCAST_DATASET_CACHE", str(tmp_path / "prep-cache"))
    get_settings.cache_clear()  # each CI job is a process of its own, reading its settings once
    assert main(["prep", "--data", URI, "--data-version", str(version), "--out", str(run)]) == 0
    assert main(["train", "--out", str(run), "--epochs", "1", "--threads", "1", "--no-progress"]) == 0
    assert main(["evaluate", "--out", str(run)]) == 0
    # The gate and publish jobs: another machine, prep's folder is not there; the data comes from S3 again.
    shutil.rmtree(tmp_path / "prep-cache")
    monkeypatch.setenv("FORKCAST_DATASET_CACHE", str(tmp_path / "gate-cache"))
    get_settings.cache_clear()
    assert main(["gate", "--out", str(run), "--champion", "auto"]) == 0
    assert (tmp_path / "gate-cache" / fingerprint / "dataset.json").is_file()
    assert main(["publish", "--out", str(run)]) == 0
    get_settings.cache_clear()

    tables = json.loads((run / PREP_DIR / PREP_FILE).read_text())["data_snapshot"]["tables"]
    expected = DatasetSnapshot(uri=URI, version=version, fingerprint=fingerprint, tables=tables)
    assert fingerprint == read_manifest(tiny_data).fingerprint  # the older version, not the newest one
    # The gate report (JSON and the page people read).
    report = json.loads((run / GATE_REPORT_FILE).read_text())
    assert DatasetSnapshot.model_validate(report["dataset"]) == expected
    assert (
        f"trained on: {URI} version {version} (fingerprint {fingerprint[:12]})"
        in (run / GATE_REPORT_MD_FILE).read_text()
    )
    # The version's manifest.json in the registry.
    release = json.loads((run / PUBLISHED_FILE).read_text())
    registry = ModelRegistry.from_settings(RegistrySettings())
    assert registry.download(release["version"]).manifest.dataset == expected
    # MLflow: the run's params and the model version's tags.
    tracker = Tracker.from_env()
    mv = tracker.client.get_model_version(REGISTERED_MODEL, release["mlflow_version"])
    params = tracker.client.get_run(mv.run_id).data.params
    assert (params["data_uri"], params["data_version"], params["data_fingerprint"]) == (
        URI,
        str(version),
        fingerprint,
    )
    assert (mv.tags["data_uri"], mv.tags["data_version"]) == (URI, str(version))


def test_a_step_refuses_a_run_whose_dataset_it_cannot_fetch(tmp_path: Path) -> None:
    """A local run's folder gone on this machine, and no lake snapshot recorded to fetch instead: named, refused."""
    info = {"data_dir": str(tmp_path / "gone"), "data_snapshot": None, "data_fingerprint": "f"}
    with pytest.raises(DataError, match=f"dataset folder {tmp_path / 'gone'} is not on this machine"):
        local_data_dir(info)
