"""Fixtures: a real redis-server loaded by the feature-store CLI, a tiny trained model, and an ASGI driver.

The redis-server launcher is the feature store's (forkcast_features.localredis), used here only from tests: the
service itself does not depend on that package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers shared by the test modules (importlib mode puts no test folder on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))

from inference_support import PREFIX, make_settings

from forkcast_features.localredis import LocalRedis
from forkcast_inference.app import InferenceApp, create_app

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from forkcast_data.generate import GenerateRequest, generate
    from forkcast_data.presets import preset_sizes

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(
        GenerateRequest(out=out, preset="tiny", sizes=preset_sizes("tiny"), progress=False),
        log=lambda _m: None,
    )
    return out


@pytest.fixture(scope="session")
def model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny RankNet and its serving form, as the files of one version (no manifest)."""
    from forkcast_retrain.cli import main as retrain
    from forkcast_retrain.publish import release_files

    run = tmp_path_factory.mktemp("run")
    assert retrain(["all", "--data", str(tiny_data), "--out", str(run), "--epochs", "1"]) == 0
    out = tmp_path_factory.mktemp("model")
    for name, path in release_files(run).items():
        shutil.copy(path, out / name)
    return out


@pytest.fixture(scope="session")
def redis_server(tiny_data: Path) -> Iterator[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        env = {**os.environ, "REDIS_URL": server.url, "FORKCAST_FEATURE_PREFIX": PREFIX}
        subprocess.run(
            [str(BIN / "forkcast-features"), "load", "--data", str(tiny_data), "--activate", "--no-progress"],
            env=env,
            check=True,
            capture_output=True,
        )
        yield server


@pytest.fixture
def app(redis_server: LocalRedis, model_dir: Path) -> InferenceApp:
    application = create_app(make_settings(redis_server.url, model_dir))
    application.startup()
    return application
