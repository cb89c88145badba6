"""The online-AUC benchmark (monitoring/benchmarks/, outside the package) runs end to end on a little traffic:
its own redis-server from forkcast_devservers, both implementations drained in child processes, and the real job
and the naive join agree on the AUC of the same pairs.

The workload is a hand-made dataset whose answers are known: the bench must serve each request's in-range
candidates (the inference's rule) and no more, and the naive baseline must read in batches like the job."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_online_auc.py"
KM_LAT = 1 / 111.195  # degrees of latitude per km on the contract's Earth radius


def write_dataset(out: Path) -> None:
    """Five restaurants north of one point, at 0, 1, 4.9, 5.1 and 20 km; id 99 is unknown."""
    lat0, lng0 = 52.0, 13.0
    km = [0.0, 1.0, 4.9, 5.1, 20.0]
    pq.write_table(
        pa.table(
            {
                "restaurant_id": list(range(len(km))),
                "latitude": [lat0 + d * KM_LAT for d in km],
                "longitude": [lng0] * len(km),
            }
        ),
        out / "restaurant_features.parquet",
    )
    candidates = [0, 1, 1, 2, 3, 4, 99]
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 2, 3],
                "latitude": [lat0] * 3,
                "longitude": [lng0] * 3,
                "candidate_restaurant_ids": [candidates] * 3,
                # in range: {0, 1, 2} within 5 km; the same truncated to size 2; all five within 25 km
                "size": [100, 2, 100],
                "max_dist": [5000, 5000, 25000],
                "sort_dist": [False] * 3,
            }
        ),
        out / "requests.parquet",
    )


def _field(pattern: str, line: str) -> str:
    found = re.search(pattern, line)
    assert found is not None, f"{pattern!r} not in {line!r}"
    return found.group(1)


def test_bench_serves_real_answer_sizes_reads_in_batches_and_both_agree(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    done = subprocess.run(
        [sys.executable, str(BENCH), "--predictions", "300", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 100 predictions each of answers 3, 2 and 5 long: one feedback entry per served restaurant
    assert "predictions drained: 300 (1,000 feedback entries, 3.3 per prediction)" in done.stdout, done.stdout
    assert "3 requests): mean 3.3, p5-p95 2-5" in done.stdout, done.stdout
    lines = dict(re.findall(r"^ *(job|naive): (.*)$", done.stdout, re.M))
    assert set(lines) == {"job", "naive"}, done.stdout
    aucs = {k: _field(r"AUC ([\d.]+)", v) for k, v in lines.items()}
    assert aucs["job"] == aucs["naive"], "the job and the naive join scored different pairs"
    # 300 predictions + 1,000 feedback entries fit in one read of each stream (+1 empty read at the end): the
    # baseline no longer pays a round trip per entry (it made 1,300 before)
    reads = {k: int(_field(r"([\d,]+) reads of ≤ 2,000", v).replace(",", "")) for k, v in lines.items()}
    assert reads["naive"] <= 4, lines["naive"]
    assert re.search(r"ratio naive/job CPU: [\d.]+x; target ≤ 100 µs/prediction: (met|NOT met)", done.stdout)
