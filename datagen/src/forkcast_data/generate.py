"""Generate a dataset directory: the five SPEC §2 outputs plus ``dataset.json``, streamed file by file.

Memory stays at the two feature tables plus one click file (about 0.5 GB at full size), whatever the number of
click rows; each file is written atomically and the run resumes after an interruption (see ``output``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from forkcast_contract.dataset import (
    DATASET_MANIFEST_FILE,
    REQUESTS_FILE,
    RESTAURANT_FEATURES_FILE,
    RUN_ORDER_SPLITS,
    USER_FEATURES_FILE,
    DatasetManifest,
    DatasetSizes,
    FileEntry,
    Split,
    click_file_name,
)
from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES
from forkcast_data import __version__
from forkcast_data.output import (
    RUN_MARKER_FILE,
    atomic_path,
    atomic_write_bytes,
    file_entry,
    fingerprint,
    prepare,
    run_params,
)
from forkcast_data.process import Entities, draw_clicks, draw_entities, draw_requests


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate and where."""

    out: Path
    preset: str
    sizes: DatasetSizes
    seed: int = 7
    drift: float = 0.0
    force: bool = False
    progress: bool = True


def users_frame(entities: Entities) -> pl.DataFrame:
    columns: dict[str, object] = {"user_id": np.arange(len(entities.users), dtype=np.int64)}
    columns |= {name: entities.users[:, i].astype(np.float64) for i, name in enumerate(USER_FEATURES)}
    return pl.DataFrame(columns)


def restaurants_frame(entities: Entities) -> pl.DataFrame:
    columns: dict[str, object] = {
        "restaurant_id": np.arange(len(entities.restaurants), dtype=np.int64),
        "latitude": entities.latitude,
        "longitude": entities.longitude,
    }
    columns |= {
        name: entities.restaurants[:, i].astype(np.float64) for i, name in enumerate(RESTAURANT_FEATURES)
    }
    return pl.DataFrame(columns)


def requests_frame(req: GenerateRequest) -> pl.DataFrame:
    s = req.sizes
    r = draw_requests(s.users, s.restaurants, s.requests, s.candidates, seed=req.seed)
    return pl.DataFrame(
        {
            "user_id": r.user_id,
            "latitude": r.latitude,
            "longitude": r.longitude,
            "candidate_restaurant_ids": pl.Series(r.candidates).cast(pl.List(pl.Int64)),
            "size": r.size,
            "max_dist": r.max_dist,
            "sort_dist": r.sort_dist,
        }
    )


def _write_frame(out: Path, name: str, build: Callable[[], pl.DataFrame]) -> FileEntry:
    """Write one table unless a previous (resumed) run already left it complete."""
    path = out / name
    if not path.is_file():
        frame = build()
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp)
    return file_entry(out, path, pl.scan_parquet(path).select(pl.len()).collect().item())


def _write_clicks(out: Path, req: GenerateRequest, entities: Entities, split: Split, index: int) -> FileEntry:
    path = out / click_file_name(split, index)
    if not path.is_file():
        users, rests, clicks = draw_clicks(
            entities, req.sizes.rows_per_file, seed=req.seed, split=split, index=index
        )
        frame = pl.DataFrame({"user_id": users, "restaurant_id": rests, "click": clicks})
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp)
    return file_entry(out, path, req.sizes.rows_per_file)


def _click_rate(out: Path, files: list[FileEntry]) -> float:
    frame = pl.scan_parquet([out / f.path for f in files]).select(pl.col("click").mean()).collect()
    return float(frame.item() or 0.0)


def generate(req: GenerateRequest, log: Callable[[str], None] = print) -> DatasetManifest:
    """Generate (or resume, or recognise as complete) the dataset described by ``req``."""
    s = req.sizes
    params = run_params(req.preset, req.seed, req.drift, s.model_dump())
    state = prepare(req.out, params, force=req.force)
    if state == "complete":
        log(f"{req.out} already holds this dataset (preset={req.preset}, seed={req.seed}); nothing to do")
        return DatasetManifest.model_validate_json((req.out / DATASET_MANIFEST_FILE).read_bytes())
    if state == "resume":
        log(f"resuming the interrupted run in {req.out}")
    started = time.perf_counter()
    entities = draw_entities(s.users, s.restaurants, seed=req.seed, drift=req.drift)
    files = [
        _write_frame(req.out, USER_FEATURES_FILE, lambda: users_frame(entities)),
        _write_frame(req.out, RESTAURANT_FEATURES_FILE, lambda: restaurants_frame(entities)),
    ]
    log(f"users {s.users:,} and restaurants {s.restaurants:,} written ({time.perf_counter() - started:.1f}s)")

    counts: dict[Split, int] = {"train": s.train_files, "test": s.test_files}
    total_rows = (s.train_files + s.test_files) * s.rows_per_file
    click_files: dict[Split, list[FileEntry]] = {"train": [], "test": []}
    with tqdm(
        total=total_rows, unit="row", unit_scale=True, desc="clicks", disable=not req.progress, smoothing=0.1
    ) as bar:
        for split in RUN_ORDER_SPLITS:
            for index in range(counts[split]):
                click_files[split].append(_write_clicks(req.out, req, entities, split, index))
                bar.update(s.rows_per_file)
    files += click_files["train"] + click_files["test"]
    files.append(_write_frame(req.out, REQUESTS_FILE, lambda: requests_frame(req)))

    manifest = DatasetManifest(
        preset=req.preset,
        seed=req.seed,
        drift=req.drift,
        sizes=s,
        files=files,
        fingerprint=fingerprint(files),
        click_rate={split: _click_rate(req.out, fs) for split, fs in click_files.items() if fs},
        generator_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    atomic_write_bytes(req.out / DATASET_MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
    (req.out / RUN_MARKER_FILE).unlink(missing_ok=True)
    log(f"dataset complete in {time.perf_counter() - started:.1f}s: {req.out / DATASET_MANIFEST_FILE}")
    return manifest
