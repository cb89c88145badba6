"""Generator benchmark (``make bench-data``): the vectorised click draw against the original per-row loop.

Both are measured in the same run on the same tables, each the best of the same ``--rounds`` (until 2026-12-05
the vectorised draw had the best of 5 and the loop one run, issue 19), so the ratio holds on a noisy shared
machine; then the whole full-size dataset is generated for the wall time and peak memory that the issue targets
(≤ 2 min, ≤ 4 GB).
``--preset tiny`` runs every step on the small tables (the test does). Lives beside the package, not in it.

    python datagen/benchmarks/bench_generate.py --out data/bench-full
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import PRESETS, preset_sizes
from forkcast_data.process import Entities, draw_clicks, draw_entities


def original_loop(entities: Entities, rows: int, index: int) -> None:
    """The original script's step 3: one row per Python iteration, legacy global RNG."""
    users, rests = entities.users, entities.restaurants
    n_u, n_r = len(users), len(rests)
    np.random.seed(7 + index)
    for _ in range(rows):
        u = np.random.randint(n_u)
        r = np.random.randint(n_r)
        s = np.dot(users[u][:10], rests[r][:10]) + np.random.normal(0, 0.1)
        np.random.binomial(1, 1 / (1 + math.exp(-s)))


def vectorised(entities: Entities, rows: int, index: int) -> None:
    draw_clicks(entities, rows, seed=7, split="train", index=index)


def best_rows_per_s(
    draw: Callable[[Entities, int, int], None], entities: Entities, rows: int, rounds: int
) -> float:
    """Rows per second of the fastest of ``rounds`` runs (each on fresh random draws)."""
    best = math.inf
    for i in range(rounds):
        started = time.perf_counter()
        draw(entities, rows, i)
        best = min(best, time.perf_counter() - started)
    return rows / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python datagen/benchmarks/bench_generate.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the generated dataset")
    parser.add_argument(
        "--loop-rows", type=int, default=50_000, help="rows per round of the per-row baseline"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of each click draw; the best of each is compared"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="full", help="dataset sizes (default full: the target)"
    )
    args = parser.parse_args(argv)

    sizes = preset_sizes(args.preset)
    entities = draw_entities(sizes.users, sizes.restaurants)
    loop = best_rows_per_s(original_loop, entities, args.loop_rows, args.rounds)
    vec = best_rows_per_s(vectorised, entities, sizes.rows_per_file, args.rounds)
    del entities

    started = time.perf_counter()
    generate(GenerateRequest(out=args.out, preset=args.preset, sizes=sizes, force=True))
    wall = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    click_rows = (sizes.train_files + sizes.test_files) * sizes.rows_per_file

    print(f"click draw, best of {args.rounds} rounds each")
    print(f"click draw, original per-row loop : {loop:>14,.0f} rows/s   ({args.loop_rows:,} rows per round)")
    print(
        f"click draw, vectorised (in memory): {vec:>14,.0f} rows/s   ratio {vec / loop:,.0f}x"
        f"   ({sizes.rows_per_file:,} rows per round)"
    )
    print(
        f"{args.preset} preset generate ({click_rows:,} click rows, written + hashed): {wall:.1f} s wall, "
        f"{click_rows / wall:,.0f} rows/s, peak RSS {peak_gb:.2f} GB"
    )
    print(f"original loop would need ≈ {click_rows / loop / 60:,.0f} min for the click rows alone")


if __name__ == "__main__":
    main()
