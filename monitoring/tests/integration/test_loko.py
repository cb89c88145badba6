"""Issue 18.1, the part the share cap leaves open: one key at its share still moves the AUC (the attacker review's
proof: 0.757 to 0.407 or 0.818), so the recent window also carries the range of its AUC with each single key left
out. These tests hold ``leave_one_key_out`` to a plain recompute per key (brute-force pair counts, no shared code),
define its absent cases, reproduce the proof on the real Window, and read the two gauges off the job's /metrics.
The canary analysis that reads the range is tested in tests/delivery/test_rollouts.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from forkcast_contract import metric_names as n
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.testing import brute_auc, scrape
from forkcast_monitoring.window import Estimate, Window, leave_one_key_out

I32 = np.int32


def plain_range(scores: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> tuple[float, float]:
    """K recomputes, one per key left out, each a brute-force count over the remaining pairs."""
    aucs = [brute_auc(scores[keys != k], labels[keys != k]) for k in np.unique(keys)]
    return min(aucs), max(aucs)


@pytest.mark.parametrize("seed", range(6))
def test_the_range_is_k_plain_recomputes_to_1e9(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size, n_keys = int(rng.integers(200, 1500)), int(rng.integers(2, 40))
    labels = rng.random(size) < rng.uniform(0.1, 0.6)
    # Half the seeds score on a coarse grid: ties within a key, across keys and across classes.
    noise = rng.integers(0, 7, size) if seed % 2 else rng.normal(0, 1, size)
    scores = (noise + labels * rng.uniform(0, 2)).astype(np.float64)
    keys = rng.integers(0, n_keys, size).astype(I32) * 3  # codes with gaps: keys the window no longer holds
    got = leave_one_key_out(scores, labels, keys, min_samples=1, min_per_class=1)
    assert got is not None
    want = plain_range(scores, labels, keys)
    assert abs(got[0] - want[0]) < 1e-9 and abs(got[1] - want[1]) < 1e-9


def test_the_range_is_of_the_kept_pairs_when_the_share_cap_leaves_some_out() -> None:
    """The estimate's range is over the pairs its AUC uses: a key above its share is left out by its oldest pairs
    first, then each key in turn."""
    rng = np.random.default_rng(9)
    w = Window(window_s=1000.0, max_samples=100_000, max_key_share=0.25)
    size = 4000
    keys = np.r_[rng.integers(1, 6, size - 1500), np.zeros(1500, dtype=np.int64)]  # key 0 floods
    labels = rng.random(size) < 0.3
    scores = rng.normal(0, 1, size) + labels
    w.extend(rng.uniform(0, 100, size).tolist(), scores.tolist(), labels.tolist(), keys.tolist())
    kept_scores, kept_labels, kept_keys, excluded = w.kept()
    e = w.estimate(min_samples=50, min_per_class=5, key_range=True)
    assert excluded > 0 and e.excluded == excluded
    assert e.loko_min is not None and e.loko_max is not None
    want = plain_range(kept_scores, kept_labels, kept_keys)
    assert abs(e.loko_min - want[0]) < 1e-9 and abs(e.loko_max - want[1]) < 1e-9
    assert e.auc is not None and e.loko_min <= e.auc <= e.loko_max


def test_absent_with_one_key_or_when_leaving_a_key_out_drops_below_the_minimum() -> None:
    scores = np.arange(100, dtype=np.float64)
    labels = np.arange(100) % 2 == 0
    one_key = np.zeros(100, dtype=I32)
    assert leave_one_key_out(scores, labels, one_key, 1, 1) is None  # leaving the only key out leaves nothing
    two = (np.arange(100) >= 60).astype(I32)  # 60 pairs of key 0, 40 of key 1
    assert leave_one_key_out(scores, labels, two, 40, 1) is not None  # without key 0: 40 pairs, enough
    assert leave_one_key_out(scores, labels, two, 41, 1) is None  # without key 0: 40 < 41
    # Without key 1 the rest has no positive: no AUC to take the range of.
    one_class = np.where(labels, 1, np.arange(100) % 3).astype(I32)
    assert leave_one_key_out(scores, labels, one_class, 1, 1) is None
    # The estimate carries the range only when asked (the job asks for the recent window's).
    w = Window(window_s=1000.0, max_samples=1000)
    w.extend(np.zeros(100).tolist(), scores.tolist(), labels.tolist(), two.tolist())
    assert (w.estimate(10, 1).loko_min, w.estimate(10, 1).loko_max) == (None, None)
    ranged = w.estimate(10, 1, key_range=True)
    assert ranged.loko_min is not None and ranged.loko_max is not None


# -- the attacker review's proof (/tmp/steer_proof.py), on the real Window at the default share -------------------

SHARE = MonitoringSettings.model_fields["auc_max_key_share"].default


def proof_windows() -> dict[str | None, Estimate]:
    """The proof's three windows, drawn from one generator in its order: ten honest keys whose clicks follow the
    scores; for "abort" and "pass" one more key holding exactly its share that clicks the lowest-scored half of what
    it was served ("abort") or exactly the top-scored tenth ("pass")."""
    rng = np.random.default_rng(0)
    honest = 30_000
    labels = rng.random(honest) < 0.1
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, honest) + labels * 0.95)))
    keys = rng.integers(1, 11, honest)
    out: dict[str | None, Estimate] = {}
    for attack in (None, "abort", "pass"):
        w = Window(3600.0, 200_000, SHARE)
        w.extend([1000.0] * honest, scores.tolist(), labels.tolist(), keys.tolist())
        if attack is not None:
            count = honest // 3  # a quarter of the window: nothing is excluded
            served = 1 / (1 + np.exp(-rng.normal(0, 1, count)))
            half, tenth = np.quantile(served, 0.5), np.quantile(served, 0.9)
            clicked = served < half if attack == "abort" else served > tenth
            w.extend([1000.0] * count, served.tolist(), clicked.tolist(), [0] * count)
        out[attack] = w.estimate(100, 10, key_range=True)
    return out


def test_one_steering_key_at_its_share_makes_the_range_straddle_the_threshold() -> None:
    """The proof's numbers: the steering key moves the AUC itself across any threshold near the honest AUC, and
    moves one end of the range only; without it both ends agree. Thresholds: 0.02 below a stable version as good as
    the honest keys (the abort attack on a good canary), and 0.02 above the honest AUC (a stable 0.04 better than
    this canary: the pass attack on a bad canary)."""
    windows = proof_windows()
    (honest, h_lo, h_hi), (abort, a_lo, a_hi), (passed, p_lo, p_hi) = (
        (e.auc, e.loko_min, e.loko_max) for e in (windows[None], windows["abort"], windows["pass"])
    )
    assert all(e.excluded == 0 for e in windows.values())
    assert honest is not None and h_lo is not None and h_hi is not None
    assert abort is not None and a_lo is not None and a_hi is not None
    assert passed is not None and p_lo is not None and p_hi is not None
    assert (round(honest, 3), round(abort, 3), round(passed, 3)) == (0.757, 0.407, 0.818)
    down, up = honest - 0.02, honest + 0.02
    # Without the steering key both ends agree with the AUC on either threshold.
    assert down < h_lo <= h_hi < up
    # The abort attack: the AUC falls below `down` (a good canary would abort), the range straddles it.
    assert abort < down and a_lo < down <= a_hi
    # The pass attack: the AUC rises above `up` (a bad canary would pass), the range straddles it.
    assert passed >= up and p_lo < up <= p_hi


# -- the job's /metrics ---------------------------------------------------------------------------------------------


def exposition(job: OnlineAuc) -> dict[str, float]:
    out = {}
    for line in scrape(job).splitlines():
        if line.startswith(n.ONLINE_AUC_RECENT_LOKO_MIN) or line.startswith(n.ONLINE_AUC_RECENT_LOKO_MAX):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_job_exports_the_recent_windows_range_per_version_and_omits_it_when_absent(
    settings: MonitoringSettings,
) -> None:
    job = OnlineAuc(redis.Redis.from_url(settings.redis_url), settings, recent_window_s=300.0)
    rng = np.random.default_rng(4)
    size = 3000
    labels = rng.random(size) < 0.3
    scores = rng.normal(0, 1, size) + labels
    times = rng.uniform(0, 1000, size)
    keys = rng.integers(0, 5, size)
    many = job.windows["v1"] = Window(1000.0, 10_000, 1.0)
    many.extend(times.tolist(), scores.tolist(), labels.tolist(), keys.tolist())
    single = job.windows["v2"] = Window(1000.0, 10_000, 1.0)  # one key: an AUC, but no range
    single.extend(times.tolist(), scores.tolist(), labels.tolist(), [0] * size)
    job.compute(now=1000.0)  # recent window: pairs at t >= 700
    got = exposition(job)
    recent = times >= 700.0
    lo, hi = plain_range(scores[recent], labels[recent], keys[recent])
    assert set(got) == {
        f'{n.ONLINE_AUC_RECENT_LOKO_MIN}{{model_version="v1"}}',
        f'{n.ONLINE_AUC_RECENT_LOKO_MAX}{{model_version="v1"}}',
    }
    assert abs(got[f'{n.ONLINE_AUC_RECENT_LOKO_MIN}{{model_version="v1"}}'] - lo) < 1e-9
    assert abs(got[f'{n.ONLINE_AUC_RECENT_LOKO_MAX}{{model_version="v1"}}'] - hi) < 1e-9
    assert job.recent["v2"].auc is not None and job.recent["v2"].loko_min is None
    # The long window's estimate carries no range (the canary analysis reads the recent one only).
    assert job.estimates["v1"].loko_min is None
