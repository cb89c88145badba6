"""The online-AUC benchmark (monitoring/benchmarks/, outside the package) runs end to end on a little traffic:
its own redis-server from forkcast_devservers, both implementations drained in child processes, and the real job
and the naive join agree on the AUC of the same pairs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_online_auc.py"


def test_bench_drains_both_implementations_and_they_agree() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--predictions", "300"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "predictions drained: 300 (x10 feedback entries)" in done.stdout
    aucs = dict(re.findall(r"^ *(job|naive): .* µs CPU/prediction .* AUC ([\d.]+)$", done.stdout, re.M))
    assert set(aucs) == {"job", "naive"}, done.stdout
    assert aucs["job"] == aucs["naive"], "the job and the naive join scored different pairs"
    assert re.search(r"ratio naive/job CPU: [\d.]+x; target ≤ 100 µs/prediction: (met|NOT met)", done.stdout)
