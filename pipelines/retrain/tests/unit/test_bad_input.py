"""Bad input gives a clear error (exit status 2 from the CLI) or a documented handling, never a silent model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from forkcast_contract.dataset import RESTAURANT_FEATURES_FILE, USER_FEATURES_FILE, click_file_name
from forkcast_retrain.cli import main
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.tables import IdIndex
from forkcast_retrain.train import TrainOptions, run_train


def _prep_fails(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert main(["prep", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    _prep_fails(tmp_path / "empty", tmp_path, capsys, "not a complete forkcast dataset")


def test_missing_click_file(micro_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (micro_data / click_file_name("train", 1)).unlink()
    _prep_fails(micro_data, tmp_path, capsys, "are missing")


def test_wrong_dtype(micro_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = micro_data / USER_FEATURES_FILE
    pl.read_parquet(path).with_columns(pl.col("f03").cast(pl.Float32)).write_parquet(path)
    _prep_fails(micro_data, tmp_path, capsys, "schema mismatch")


def test_wrong_column(micro_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = micro_data / click_file_name("test", 0)
    pl.read_parquet(path).rename({"click": "label"}).write_parquet(path)
    _prep_fails(micro_data, tmp_path, capsys, "schema mismatch")


def test_nan_feature(micro_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = micro_data / RESTAURANT_FEATURES_FILE
    frame = pl.read_parquet(path)
    values = frame["f02"].to_numpy().copy()
    values[17] = np.inf
    frame.with_columns(pl.Series("f02", values)).write_parquet(path)
    _prep_fails(micro_data, tmp_path, capsys, "NaN/inf features (e.g. restaurant_id=17)")


def test_empty_click_file_stops_training(micro_data: Path, tmp_path: Path) -> None:
    run_prep(micro_data, tmp_path / "run")
    path = micro_data / click_file_name("train", 2)
    pl.read_parquet(path).head(0).write_parquet(path)
    recipe = RECIPES["default"].with_overrides(epochs=1)
    with pytest.raises(DataError, match="has no rows"):
        run_train(
            tmp_path / "run", TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None
        )


def test_unknown_ids_stop_training(micro_data: Path, tmp_path: Path) -> None:
    run_prep(micro_data, tmp_path / "run")
    path = micro_data / click_file_name("train", 0)
    frame = pl.read_parquet(path)
    ids = frame["user_id"].to_numpy().copy()
    ids[5] = 10_000_000
    frame.with_columns(pl.Series("user_id", ids)).write_parquet(path)
    recipe = RECIPES["default"].with_overrides(epochs=1)
    with pytest.raises(DataError, match="user_id ids are not in the feature table"):
        run_train(
            tmp_path / "run", TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None
        )


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [7, 3, 11, 5], [2**40, 5, 2**50 + 1, 99]])
def test_id_index_handles_sparse_and_unordered_ids(ids: list[int]) -> None:
    table_ids = np.array(ids, dtype=np.int64)
    index = IdIndex.build("user_id", table_ids)
    queries = table_ids[[3, 0, 2, 2, 1]]
    assert index.rows(queries, "q").tolist() == [3, 0, 2, 2, 1]
    with pytest.raises(DataError, match="not in the feature table"):
        index.rows(np.array([int(table_ids.max()) + 1, -1], dtype=np.int64), "q")


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(DataError, match="duplicate"):
        IdIndex.build("user_id", np.array([4, 9, 4], dtype=np.int64))
