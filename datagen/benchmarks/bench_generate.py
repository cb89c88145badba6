"""Generator benchmark (``make bench-data``): the vectorised click draw against the original per-row loop.

Both are measured in the same run on the same tables, so the ratio holds on a noisy shared machine; then the
whole full-size dataset is generated for the wall time and peak memory that the issue targets (≤ 2 min, ≤ 4 GB).
``--preset tiny`` runs every step on the small tables (the test does). Lives beside the package, not in it.

    python datagen/benchmarks/bench_generate.py --out data/bench-full
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import numpy as np

from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import PRESETS, preset_sizes
from forkcast_data.process import Entities, draw_clicks, draw_entities


def original_loop_rows_per_s(entities: Entities, rows: int) -> float:
    """The original script's step 3: one row per Python iteration, legacy global RNG."""
    users, rests = entities.users, entities.restaurants
    n_u, n_r = len(users), len(rests)
    np.random.seed(7)
    started = time.perf_counter()
    for _ in range(rows):
        u = np.random.randint(n_u)
        r = np.random.randint(n_r)
        s = np.dot(users[u][:10], rests[r][:10]) + np.random.normal(0, 0.1)
        np.random.binomial(1, 1 / (1 + math.exp(-s)))
    return rows / (time.perf_counter() - started)


def vectorised_rows_per_s(entities: Entities, rows: int, repeats: int = 5) -> float:
    best = math.inf
    for i in range(repeats):
        started = time.perf_counter()
        draw_clicks(entities, rows, seed=7, split="train", index=i)
        best = min(best, time.perf_counter() - started)
    return rows / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python datagen/benchmarks/bench_generate.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the generated dataset")
    parser.add_argument("--loop-rows", type=int, default=50_000, help="rows for the per-row baseline")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="full", help="dataset sizes (default full: the target)"
    )
    args = parser.parse_args(argv)

    sizes = preset_sizes(args.preset)
    entities = draw_entities(sizes.users, sizes.restaurants)
    loop = original_loop_rows_per_s(entities, args.loop_rows)
    vec = vectorised_rows_per_s(entities, sizes.rows_per_file)
    del entities

    started = time.perf_counter()
    generate(GenerateRequest(out=args.out, preset=args.preset, sizes=sizes, force=True))
    wall = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    click_rows = (sizes.train_files + sizes.test_files) * sizes.rows_per_file

    print(f"click draw, original per-row loop : {loop:>14,.0f} rows/s")
    print(f"click draw, vectorised (in memory): {vec:>14,.0f} rows/s   ratio {vec / loop:,.0f}x")
    print(
        f"{args.preset} preset generate ({click_rows:,} click rows, written + hashed): {wall:.1f} s wall, "
        f"{click_rows / wall:,.0f} rows/s, peak RSS {peak_gb:.2f} GB"
    )
    print(f"original loop would need ≈ {click_rows / loop / 60:,.0f} min for the click rows alone")


if __name__ == "__main__":
    main()
