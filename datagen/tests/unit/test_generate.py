"""A generator run end to end: schema, manifest, idempotent reruns, resume, and every refusal."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

import forkcast_data.generate as generate_module
from forkcast_contract.dataset import (
    CLICK_COLUMNS,
    REQUEST_COLUMNS,
    RESTAURANT_COLUMNS,
    USER_COLUMNS,
    read_manifest,
)
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.output import RUN_MARKER_FILE, GenerateError, fingerprint


def _schema(path: Path) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in pl.read_parquet_schema(path).items()}


def _quiet(_: str) -> None:
    pass


def test_tiny_preset_writes_the_five_outputs_with_the_exact_schema(tmp_path: Path, tiny_sizes) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "tiny"
    manifest = generate(GenerateRequest(out=out, preset="tiny", sizes=tiny_sizes, progress=False), _quiet)

    assert _schema(out / "user_features.parquet") == USER_COLUMNS
    assert _schema(out / "restaurant_features.parquet") == RESTAURANT_COLUMNS
    assert _schema(out / "requests.parquet") == REQUEST_COLUMNS
    for i in range(4):
        assert _schema(out / f"train/train_{i:02d}.parquet") == CLICK_COLUMNS
    assert _schema(out / "test/test_00.parquet") == CLICK_COLUMNS

    assert manifest == read_manifest(out)
    assert manifest.rows("train/") == 200_000 and manifest.rows("test/") == 50_000
    assert pl.read_parquet(out / "user_features.parquet")["user_id"].to_list() == list(range(10_000))
    assert pl.read_parquet(out / "requests.parquet").height == 200
    assert manifest.fingerprint == fingerprint(manifest.files)
    assert 0.3 < manifest.click_rate["train"] < 0.7
    assert not (out / RUN_MARKER_FILE).exists()


def test_rerun_with_the_same_options_changes_nothing(micro_request: GenerateRequest) -> None:
    first = generate(micro_request, _quiet)
    mtimes = {p: p.stat().st_mtime_ns for p in micro_request.out.rglob("*.parquet")}
    messages: list[str] = []
    second = generate(micro_request, messages.append)
    assert second == first
    assert "nothing to do" in messages[0]
    assert {p: p.stat().st_mtime_ns for p in micro_request.out.rglob("*.parquet")} == mtimes


def test_other_options_are_refused_unless_forced(micro_request: GenerateRequest) -> None:
    first = generate(micro_request, _quiet)
    with pytest.raises(GenerateError, match="different dataset"):
        generate(replace(micro_request, seed=8), _quiet)
    assert read_manifest(micro_request.out) == first
    forced = generate(replace(micro_request, seed=8, force=True), _quiet)
    assert forced.seed == 8 and forced.fingerprint != first.fingerprint


def test_interrupted_run_resumes_to_the_same_dataset(
    micro_request: GenerateRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = generate(replace(micro_request, out=tmp_path / "reference"), _quiet)

    real = generate_module._write_clicks
    calls = {"n": 0}

    def crash_on_third_file(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module, "_write_clicks", crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        generate(micro_request, _quiet)
    out = micro_request.out
    assert not (out / "dataset.json").exists() and (out / RUN_MARKER_FILE).exists()
    assert not list(out.rglob("*tmp*")), "no half-written file may be left behind"

    # Another run's options must not be mixed into the interrupted one.
    with pytest.raises(GenerateError, match="interrupted run with other parameters"):
        generate(replace(micro_request, seed=9), _quiet)

    monkeypatch.setattr(generate_module, "_write_clicks", real)
    messages: list[str] = []
    resumed = generate(micro_request, messages.append)
    assert "resuming" in messages[0]
    assert resumed.fingerprint == reference.fingerprint


def test_foreign_data_without_markers_is_refused(micro_request: GenerateRequest) -> None:
    micro_request.out.mkdir(parents=True)
    (micro_request.out / "user_features.parquet").write_bytes(b"not ours")
    with pytest.raises(GenerateError, match=r"no dataset\.json"):
        generate(micro_request, _quiet)
    assert (micro_request.out / "user_features.parquet").read_bytes() == b"not ours"


def test_unwritable_output_is_a_clear_error(micro_request: GenerateRequest) -> None:
    blocker = micro_request.out.parent / "a-file"
    blocker.write_text("x")
    with pytest.raises(GenerateError, match="not a directory"):
        generate(replace(micro_request, out=blocker), _quiet)
    with pytest.raises(GenerateError, match="cannot write to output directory"):
        generate(replace(micro_request, out=blocker / "sub"), _quiet)


def test_disk_full_leaves_no_file_that_looks_complete(
    micro_request: GenerateRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC cannot be produced portably without a tiny filesystem, so the write raises it."""

    def no_space(self: pl.DataFrame, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", no_space)
    with pytest.raises(GenerateError, match=r"disk full while writing .*user_features\.parquet"):
        generate(micro_request, _quiet)
    leftovers = [p.name for p in micro_request.out.iterdir()]
    assert leftovers == [RUN_MARKER_FILE]
    assert json.loads((micro_request.out / RUN_MARKER_FILE).read_text())["preset"] == "micro"
