"""`forkcast-data generate --out s3://…` and `forkcast-data publish DIR --to s3://…` against a real weed mini."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_data.cli import main
from forkcast_devservers.servers import Seaweed
from forkcast_lake.datasets_fetch import resolve
from forkcast_lake.settings import get_settings

SMALL = ["--users", "200", "--restaurants", "1100", "--train-files", "1", "--test-files", "1",
         "--rows-per-file", "500", "--requests", "3", "--no-progress"]  # fmt: skip


@pytest.fixture
def s3_env(seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweed.client_env("datagen-lake").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("FORKCAST_DATASET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


@pytest.mark.usefixtures("s3_env")
def test_generate_to_s3_publishes_instead_of_writing_a_folder_named_s3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "s3://datagen-lake/generated"
    assert main(["generate", "--out", uri, *SMALL]) == 0
    assert f"published {uri} version 0" in capsys.readouterr().out
    assert not (tmp_path / "s3:").exists()  # what a Path-typed --out used to create
    assert resolve(uri).manifest.sizes.users == 200
    assert not list((tmp_path / "cache" / "staging").iterdir())  # the staging draw is removed once published


@pytest.mark.usefixtures("s3_env")
def test_publish_twice_adds_one_version_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "s3://datagen-lake/published"
    assert main(["generate", "--out", str(tmp_path / "d"), *SMALL]) == 0
    assert main(["publish", str(tmp_path / "d"), "--to", uri]) == 0
    assert f"published {uri} version 0" in capsys.readouterr().out
    assert main(["publish", str(tmp_path / "d"), "--to", uri]) == 0
    assert "already holds this dataset as version 0" in capsys.readouterr().out
    assert resolve(uri).version == 0


@pytest.mark.usefixtures("s3_env")
def test_publish_refuses_a_local_target_and_an_incomplete_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", str(tmp_path), "--to", str(tmp_path / "elsewhere")]) == 2
    assert "is not an s3://bucket/prefix URI" in capsys.readouterr().err
    assert main(["publish", str(tmp_path), "--to", "s3://datagen-lake/empty"]) == 1
    assert "has no dataset.json" in capsys.readouterr().err
