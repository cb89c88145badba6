"""Bad input is rejected with the offending column/row named, and nothing reaches Redis or goes live."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import redis

from forkcast_contract.dataset import RESTAURANT_FEATURES_FILE, USER_FEATURES_FILE
from forkcast_features.cli import main

Edit = Callable[[pl.DataFrame], pl.DataFrame]


def _set(column: str, row: int, value: object) -> Edit:
    def edit(df: pl.DataFrame) -> pl.DataFrame:
        values = df[column].to_list()
        values[row] = value
        return df.with_columns(pl.Series(column, values, dtype=df[column].dtype))

    return edit


CASES: list[tuple[str, str, Edit, str]] = [
    ("missing column", USER_FEATURES_FILE, lambda df: df.drop("f07"), "missing column(s) f07"),
    (
        "wrong dtype",
        USER_FEATURES_FILE,
        lambda df: df.with_columns(pl.col("f03").cast(pl.Float32)),
        "column f03 has dtype Float32",
    ),
    ("NaN", USER_FEATURES_FILE, _set("f05", 17, float("nan")), "column f05 row 17: value nan is not finite"),
    (
        "inf",
        RESTAURANT_FEATURES_FILE,
        _set("f09", 3, float("inf")),
        "column f09 row 3: value inf is not finite",
    ),
    (
        "float32 overflow",
        USER_FEATURES_FILE,
        _set("f00", 4, 1e39),
        "column f00 row 4: value 1e+39 is outside",
    ),
    ("duplicate id", USER_FEATURES_FILE, _set("user_id", 9, 3), "duplicate id 3 at rows 3 and 9"),
    (
        "id out of range",
        RESTAURANT_FEATURES_FILE,
        _set("restaurant_id", 5, 10**9),
        "column restaurant_id row 5: id 1000000000 out of range",
    ),
    ("latitude out of range", RESTAURANT_FEATURES_FILE, _set("latitude", 2, 91.0), "column latitude row 2"),
    ("null", USER_FEATURES_FILE, _set("f11", 6, None), "column f11 has null values (first at row 6)"),
]


@pytest.mark.parametrize(("name", "file", "edit", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_and_nothing_activated(
    name: str,
    file: str,
    edit: Edit,
    message: str,
    tiny_data: Path,
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    edit(pl.read_parquet(data / file)).write_parquet(data / file)
    client.set("fc:live", "previous")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["load", "--data", str(data), "--activate", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and file in err
    assert client.get("fc:live") == b"previous"
    assert client.dbsize() == 1


def test_data_dir_without_manifest_is_refused(
    tiny_data: Path,
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "dataset.json").unlink()
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["load", "--data", str(data), "--no-progress"]) == 2
    assert "no dataset.json" in capsys.readouterr().err
    assert client.dbsize() == 0


def test_source_tables_match_the_parquet(tiny_data: Path) -> None:
    from forkcast_features.source import read_source

    src = read_source(tiny_data)
    frame = pl.read_parquet(tiny_data / USER_FEATURES_FILE)
    np.testing.assert_array_equal(src.users.features[:, 29], frame["f29"].to_numpy())
    assert len(src.restaurants.ids) == src.manifest.sizes.restaurants
