"""The point-in-time training table on local Delta tables: labels, features as served, reproducibility.

Each test writes a small served log (forkcast_lake.pit_testing: records in the producers' encoding through the
compaction's decoders) and a feature dataset directory, builds the table and reads the parquet files back as the
trainer would (forkcast_retrain.tables.IdIndex over the state ids).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from forkcast_contract.dataset import RESTAURANT_FEATURES_FILE, USER_FEATURES_FILE, read_manifest
from forkcast_contract.features import USER_FEATURES
from forkcast_lake.cli import main
from forkcast_lake.datasets import LakeDataError
from forkcast_lake.pit_complete import IncompleteWindowError
from forkcast_lake.pit_features import STATE_STRIDE
from forkcast_lake.pit_source import ServedLog
from forkcast_lake.pit_testing import LogWriter, write_features_dataset
from forkcast_lake.retention import RetentionSettings, compact, maintain
from forkcast_lake.storage import table_uri
from forkcast_lake.training_table import TrainingTable, build, training_table
from forkcast_retrain.tables import IdIndex

T0 = 1_800_000_000.0
UPDATED = [0.5] * 30  # a user's features after a live update (exact in float32)


@pytest.fixture
def world(tmp_path: Path) -> tuple[str, str, str]:
    """(lake prefix, features dataset directory, its feature version)."""
    features = tmp_path / "features"
    fv = write_features_dataset(features, users=10, restaurants=20)
    return str(tmp_path / "lake"), str(features), fv


def _build(lake: str, fv_dir: str) -> tuple[pl.DataFrame, TrainingTable]:
    """The table of the hour after T0, and its click rows joined with the feature rows they name."""
    table = build(ServedLog(lake), T0 - 60, T0 + 3600, [fv_dir])
    clicks = pl.concat(table.clicks.values())
    rows = clicks.join(table.users, on="user_id").join(table.restaurants, on="restaurant_id", suffix="_r")
    assert rows.height == clicks.height  # every click row names a user state and a restaurant state
    return rows, table


def test_a_feature_updated_after_a_prediction_does_not_leak_into_its_row(
    world: tuple[str, str, str], tmp_path: Path
) -> None:
    lake, fv_dir, fv = world
    log = LogWriter()
    log.prediction("before", T0, 3, {1: 0.9}, fv=fv)
    log.user_update(3, UPDATED, T0 + 5, fv=fv)
    log.prediction("after", T0 + 10, 3, {1: 0.9}, fv=fv)
    log.user_update(3, [0.25] * 30, T0 + 20, fv=fv)  # stamped exactly at the next prediction: not before it
    log.prediction("same-instant", T0 + 20, 3, {2: 0.9}, fv=fv)
    for rid in ("before", "after", "same-instant"):
        for r in (1, 2):
            log.feedback(rid, r, True, T0 + 30)
    log.commit(lake)
    rows, table = _build(lake, fv_dir)
    snapshot = pl.read_parquet(Path(fv_dir) / USER_FEATURES_FILE).filter(pl.col("user_id") == 3)
    f00 = {r: rows.filter(pl.col("restaurant_id") == r)["f00"].to_list() for r in (1, 2)}
    # Restaurant 1 was served twice: before the update (the snapshot's value) and after it (the update's).
    assert sorted(f00[1]) == sorted([snapshot["f00"][0], 0.5])
    assert f00[2] == [0.5]  # the update stamped at the prediction's own instant is not in its row
    # Two states of user 3, two rows of the user table: the snapshot's keeps the id, the update's is sparse.
    users = table.users
    assert sorted(users["user_id"].to_list()) == [3, 3 + STATE_STRIDE]
    updated = users.filter(pl.col("user_id") == 3 + STATE_STRIDE).select(USER_FEATURES).row(0)
    assert list(updated) == UPDATED
    index = IdIndex.build("user_id", users["user_id"].to_numpy().astype(np.int64))
    assert (index.rows(rows["user_id"].to_numpy(), "clicks") >= 0).all()  # the trainer finds every state


def test_labels_follow_the_online_auc_join(world: tuple[str, str, str], tmp_path: Path) -> None:
    lake, fv_dir, fv = world
    log = LogWriter()
    log.prediction("r", T0, 1, {10: 0.1, 11: 0.2, 12: 0.3, 13: 0.4, 14: 0.5, 15: 0.6}, fv=fv, key="k1")
    log.prediction(
        "r", T0, 1, {16: 0.7}, fv=fv, key="k1", arrival=T0 + 1
    )  # a repeated event: the first counts
    log.feedback("r", 10, True, T0 + 599)  # within the window: a positive
    log.feedback("r", 11, True, T0 + 601)  # after the window: a negative
    log.feedback("r", 12, True, T0 + 5)
    log.feedback("r", 12, True, T0 + 6)  # the same click again: still one row, one positive
    log.feedback("r", 13, False, T0 + 5)
    log.feedback("r", 13, True, T0 + 6)  # a later, different label: the first one stands
    log.feedback("r", 14, True, T0 + 5, key="k2")  # another key's click: not a label, so a negative
    log.commit(lake)
    rows, _ = _build(lake, fv_dir)
    by_restaurant = dict(zip(rows["restaurant_id"], rows["click"], strict=True))
    assert by_restaurant == {10: 1, 11: 0, 12: 1, 13: 0, 14: 0, 15: 0}


def test_the_table_is_reproducible(world: tuple[str, str, str], tmp_path: Path) -> None:
    lake, fv_dir, fv = world
    log = LogWriter()
    for i in range(40):
        log.prediction(f"q{i}", T0 + i, i % 10, {i % 20: 0.5, (i + 1) % 20: 0.25}, fv=fv)
        log.feedback(f"q{i}", i % 20, i % 3 == 0, T0 + i + 1)
        if i % 7 == 0:
            log.user_update(i % 10, UPDATED, T0 + i + 0.5, fv=fv)
    log.feedback("later", 1, False, T0 + 3600 + 700)  # the feedback is compacted past the window's labels
    log.commit(lake, batches=4)
    a, b = tmp_path / "a", tmp_path / "b"
    training_table(lake, T0 - 60, T0 + 3600, str(a), [fv_dir], test_fraction=0.5)
    for table in ("predictions", "feedback", "feature_updates"):  # the same rows in other files: one per day
        compact(table_uri(lake, f"served/{table}"), target_bytes=2**26)
    training_table(lake, T0 - 60, T0 + 3600, str(b), [fv_dir], test_fraction=0.5)
    ma, mb = read_manifest(a), read_manifest(b)
    assert [(f.path, f.sha256) for f in ma.files] == [(f.path, f.sha256) for f in mb.files]
    assert ma.fingerprint == mb.fingerprint
    assert ma.rows("train/") + ma.rows("test/") == 80 and min(ma.rows("train/"), ma.rows("test/")) > 0


def test_a_feature_version_from_no_given_dataset_is_refused(
    world: tuple[str, str, str], tmp_path: Path
) -> None:
    lake, fv_dir, _ = world
    log = LogWriter()
    log.prediction("r", T0, 1, {1: 0.5}, fv="deadbeef")
    log.commit(lake)
    with pytest.raises(LakeDataError, match="deadbeef"):
        _build(lake, fv_dir)


def test_the_commands_write_the_table_and_print_the_auc(
    world: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake, fv_dir, fv = world
    log = LogWriter()
    for i in range(20):
        log.prediction(f"c{i}", T0 + i, i % 10, {1: 0.9, 2: 0.1}, fv=fv)
        log.feedback(f"c{i}", 1, True, T0 + i + 1)
        log.feedback(f"c{i}", 2, False, T0 + i + 1)
    log.feedback("later", 1, False, T0 + 20 + 700)  # compacted past until + attribution + skew
    log.commit(lake)
    out = tmp_path / "out"
    since, until = "2027-01-15T08:00:00+00:00", str(T0 + 20)  # an ISO time and Unix seconds
    argv = ["--lake", lake, "--since", since, "--until", until]
    assert main(["training-table", *argv, "--out", str(out), "--features-from", fv_dir]) == 0
    manifest = read_manifest(out)
    assert f"fingerprint {manifest.fingerprint}" in capsys.readouterr().out
    assert manifest.preset == "served-log" and manifest.rows("train/") + manifest.rows("test/") == 40
    assert main(["online-auc", *argv, "--model-version", "m1", "--max-key-share", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["samples"], printed["positives"], printed["auc"]) == (40, 20, 1.0)


def test_each_feature_version_and_restaurant_update_is_its_own_state(
    world: tuple[str, str, str], tmp_path: Path
) -> None:
    lake, fv_dir, fv = world
    second_dir = tmp_path / "features-2"
    fv2 = write_features_dataset(second_dir, users=10, restaurants=20, seed=1)  # the version after a cutover
    log = LogWriter()
    log.prediction("old-version", T0, 4, {5: 0.5}, fv=fv)
    log.restaurant_update(5, 13.75, 100.5, [0.75] * 10, T0 + 1, fv=fv)
    log.prediction("updated", T0 + 2, 4, {5: 0.5}, fv=fv)
    log.prediction("new-version", T0 + 3, 4, {5: 0.5}, fv=fv2)  # the update was to the old version only
    log.commit(lake)
    table = build(ServedLog(lake), T0 - 60, T0 + 3600, [fv_dir, str(second_dir)])
    rows = (
        pl.concat(table.clicks.values())
        .join(table.users, on="user_id")
        .join(table.restaurants, on="restaurant_id")
    )
    sources = {
        version: (pl.read_parquet(d / USER_FEATURES_FILE), pl.read_parquet(d / RESTAURANT_FEATURES_FILE))
        for version, d in ((fv, Path(fv_dir)), (fv2, second_dir))
    }
    user_f00 = {v: users.filter(pl.col("user_id") == 4)["f00"][0] for v, (users, _) in sources.items()}
    rest_f00 = {v: rests.filter(pl.col("restaurant_id") == 5)["f00"][0] for v, (_, rests) in sources.items()}
    assert sorted(rows["f00"]) == sorted([user_f00[fv], user_f00[fv], user_f00[fv2]])  # user 4: two versions
    assert sorted(rows["f00_right"]) == sorted(
        [rest_f00[fv], 0.75, rest_f00[fv2]]
    )  # restaurant 5: three states
    updated = table.restaurants.filter(pl.col("f00") == 0.75)
    assert updated.select("latitude", "longitude").row(0) == pytest.approx((13.75, 100.5), abs=1e-7)
    assert sorted(table.restaurants["restaurant_id"]) == [5, 5 + STATE_STRIDE, 5 + 2 * STATE_STRIDE]


def test_rows_served_with_an_update_older_than_the_retention_keep_its_values_after_maintain(
    world: tuple[str, str, str],
) -> None:
    """An update from before the retention cutoff, superseded only by a recent one, is still the value the kept
    predictions between the two were served with: ``maintain`` must not drop it."""
    lake, fv_dir, fv = world
    log = LogWriter()
    log.user_update(3, UPDATED, T0 - 40 * 86400, fv=fv)  # 40 days before: older than a 30-day policy
    log.prediction("kept", T0, 3, {1: 0.9}, fv=fv)  # inside the policy, served with UPDATED
    log.user_update(3, [0.25] * 30, T0 + 100, fv=fv)  # the recent update that supersedes it
    log.commit(lake)
    settings = RetentionSettings(
        environment="local", FORKCAST_LAKE_KEEP_DAYS=30, FORKCAST_LAKE_VACUUM_RETENTION_HOURS=0
    )  # type: ignore[call-arg]
    maintain(lake, settings, now=datetime.fromtimestamp(T0 + 86400, UTC))
    rows, _ = _build(lake, fv_dir)
    assert rows.height == 1
    assert rows.select(USER_FEATURES).row(0) == tuple(UPDATED)  # not the snapshot's value, not the later one


def _clicked_window(lake: str, fv: str, last_click: float) -> None:
    """Ten requests in the minute after T0, clicked; the feedback stream compacted up to ``last_click``."""
    log = LogWriter()
    for i in range(10):
        log.prediction(f"w{i}", T0 + i, i, {1: 0.9, 2: 0.1}, fv=fv)
        log.feedback(f"w{i}", 1, True, T0 + i + 1)
    log.feedback("last", 1, False, last_click)
    log.commit(lake)


def test_a_window_whose_clicks_may_not_be_compacted_yet_is_refused_unless_allowed(
    world: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake, fv_dir, fv = world
    until = T0 + 60
    _clicked_window(lake, fv, last_click=until + 600 + 29)  # one second short of attribution + skew
    argv = ["training-table", "--lake", lake, "--since", str(T0), "--until", str(until), "--features-from", fv_dir,
            "--test-fraction", "0.5"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "feedback table is committed up to 2027-01-15T08:11:29.000Z" in err
    assert (
        "needs it committed up to 2027-01-15T08:11:30.000Z (until + attribution 600 s + clock skew 30 s)"
        in err
    )
    assert not (tmp_path / "a").exists()
    assert main([*argv, "--out", str(tmp_path / "b"), "--allow-incomplete"]) == 0
    assert read_manifest(tmp_path / "b").rows("train/") + read_manifest(tmp_path / "b").rows("test/") == 20
    _clicked_window(lake, fv, last_click=until + 630)  # now exactly far enough
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0


def test_a_feedback_table_without_a_committed_position_is_refused(
    world: tuple[str, str, str], tmp_path: Path
) -> None:
    lake, fv_dir, fv = world
    _clicked_window(lake, fv, last_click=T0 + 5000)
    feedback = table_uri(lake, "served/feedback")
    rows = pl.read_delta(feedback)
    shutil.rmtree(feedback)
    rows.write_delta(feedback, delta_write_options={"partition_by": ["date"]})  # the rows, no compaction txn
    with pytest.raises(IncompleteWindowError, match=r"feedback table has no committed position"):
        training_table(lake, T0, T0 + 60, str(tmp_path / "out"), [fv_dir], test_fraction=0.5)


def test_a_window_starting_before_the_retention_cutoff_is_refused(
    world: tuple[str, str, str], tmp_path: Path
) -> None:
    lake, fv_dir, fv = world
    _clicked_window(lake, fv, last_click=T0 + 5000)
    now = datetime.fromtimestamp(T0 + 30 * 86400, UTC)  # 2027-02-14: a 30-day policy keeps 2027-01-15 on
    with pytest.raises(IncompleteWindowError) as refused:
        training_table(
            lake, T0 - 8 * 3600 - 1, T0 + 60, str(tmp_path / "out"), [fv_dir], keep_days=30, now=now
        )
    assert "--since 2027-01-14T23:59:59.000Z is before the retention cutoff 2027-01-15" in str(refused.value)
    assert "FORKCAST_LAKE_KEEP_DAYS=30" in str(refused.value)
    ok = tmp_path / "ok"
    written = training_table(
        lake, T0 - 60, T0 + 60, str(ok), [fv_dir], test_fraction=0.5, keep_days=30, now=now
    )
    assert written.table.pairs == 20
