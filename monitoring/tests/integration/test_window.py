"""Unit: the AUC against a brute-force pair count, the interval, "not enough data", the bounded ring, and the
recent window the canary analysis compares versions on (exactly the pairs since its horizon, exported per version).
"""

from __future__ import annotations

import numpy as np
import redis

from forkcast_contract import metric_names
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.testing import brute_auc, scrape
from forkcast_monitoring.window import Window, hanley_mcneil, roc_auc


def test_auc_matches_pair_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 8, size=300).astype(np.float64)  # many ties
        labels = rng.random(300) < 0.3
        assert abs(roc_auc(scores, labels) - brute_auc(scores, labels)) < 1e-12


def test_interval_contains_the_estimate_and_narrows_with_data() -> None:
    lo1, hi1 = hanley_mcneil(0.75, 50, 200)
    lo2, hi2 = hanley_mcneil(0.75, 5000, 20000)
    assert lo1 < lo2 < 0.75 < hi2 < hi1
    assert hi2 - lo2 < 0.02


def test_no_auc_below_minimum_or_with_one_class() -> None:
    w = Window(window_s=100.0, max_samples=1000)
    for i in range(40):
        w.add(float(i), float(i), i % 2 == 0)
    assert w.estimate(min_samples=50, min_per_class=1).auc is None
    assert w.estimate(min_samples=10, min_per_class=1).auc is not None
    one_class = Window(window_s=100.0, max_samples=1000)
    for i in range(100):
        one_class.add(float(i), float(i), False)
    assert one_class.estimate(min_samples=10, min_per_class=1).auc is None


def test_window_is_bounded_and_keeps_the_newest_pairs() -> None:
    w = Window(window_s=10.0, max_samples=100)
    for i in range(1000):
        w.add(float(i), 0.0, True)
        assert w.size <= 100
    kept = sorted(w.times[: w.size].tolist())
    assert kept == [float(t) for t in range(1000 - w.size, 1000)] and w.size >= 95  # sheds 5 % at a time
    assert w.shed == 1000 - w.size
    w.evict(now=995.0)
    assert w.size == 15  # times 985..999 are within 10 s of 995


def test_eviction_goes_by_each_pairs_own_time_not_its_place() -> None:
    """Pairs arrive in join order: a late click joins a prediction older than pairs already in the window. Before
    issue 18.10 eviction stopped at the first pair still inside the window, so the late pair behind it stayed."""
    w = Window(window_s=30.0, max_samples=100)
    w.extend([150.0, 100.0, 160.0, 120.0], [0.9, 0.8, 0.2, 0.1], [True, True, False, False])
    w.evict(now=170.0)  # horizon 140: the pairs of 100 and 120 are out, wherever they sit
    assert sorted(w.times[: w.size].tolist()) == [150.0, 160.0]
    scores, labels, _, _ = w.kept()
    assert sorted(zip(scores.tolist(), labels.tolist(), strict=True)) == [(0.2, False), (0.9, True)]


def test_extend_within_capacity_keeps_what_the_same_adds_keep() -> None:
    rng = np.random.default_rng(3)
    one, many = Window(100.0, 40), Window(100.0, 40)
    t = 0
    for n in (3, 4, 0, 7, 1, 9):
        times = [float(t + k) for k in range(n)]
        scores, labels = rng.random(n).tolist(), (rng.random(n) < 0.5).tolist()
        keys = rng.integers(0, 3, n).tolist()
        t += n
        for pair in zip(times, scores, labels, keys, strict=True):
            one.add(*pair)
        many.extend(times, scores, labels, keys)
        for name in ("times", "scores", "labels", "keys"):
            assert getattr(many, name)[: many.size].tolist() == getattr(one, name)[: one.size].tolist()


def test_a_batch_larger_than_the_window_keeps_its_newest_pairs() -> None:
    w = Window(100.0, 10)
    w.extend([float(t) for t in range(25)], [0.5] * 25, [True] * 25)
    assert w.size <= 10 and max(w.times[: w.size]) == 24.0
    assert sorted(w.times[: w.size].tolist()) == [float(t) for t in range(25 - w.size, 25)]


def _two_halves(rng: np.random.Generator) -> tuple[Window, np.ndarray, np.ndarray, np.ndarray]:
    """3,000 pairs over 1,000 s: scores carry no signal before t=700, a strong one after; added out of time order."""
    times = rng.uniform(0.0, 1000.0, size=3000)
    labels = rng.random(3000) < 0.4
    noise = rng.normal(size=3000)
    scores = np.where(times >= 700.0, labels * 2.0 + noise, noise)
    w = Window(window_s=3600.0, max_samples=10_000)
    w.extend(times.tolist(), scores.tolist(), labels.tolist())
    return w, times, scores, labels


def test_recent_estimate_is_the_auc_of_exactly_the_pairs_since_the_horizon() -> None:
    w, times, scores, labels = _two_halves(np.random.default_rng(5))
    recent = times >= 700.0
    e = w.estimate(min_samples=50, min_per_class=5, since=700.0)
    assert e.samples == int(recent.sum()) and e.positives == int(labels[recent].sum())
    assert e.auc is not None and abs(e.auc - brute_auc(scores[recent], labels[recent])) < 1e-12
    # Twin: the whole window (what comparing an hour-old stable with a minutes-old canary reads) is another number.
    whole = w.estimate(min_samples=50, min_per_class=5)
    assert whole.samples == 3000 and whole.auc is not None and abs(whole.auc - e.auc) > 0.1


def test_recent_estimate_below_the_minimum_has_no_auc() -> None:
    w, times, _, _ = _two_halves(np.random.default_rng(6))
    n_recent = int((times >= 990.0).sum())
    e = w.estimate(min_samples=n_recent + 1, min_per_class=1, since=990.0)
    assert (e.samples, e.auc) == (n_recent, None)


def test_the_job_exports_both_windows_per_version(settings: MonitoringSettings) -> None:
    """forkcast_online_auc_recent{model_version} is the recent window's AUC, beside the long window's."""
    job = OnlineAuc(redis.Redis.from_url(settings.redis_url), settings, recent_window_s=300.0)
    w, times, scores, labels = _two_halves(np.random.default_rng(7))
    w.window_s = 1000.0
    job.windows["v7"] = w
    job.compute(now=1000.0)  # recent window: pairs at t >= 700
    text = scrape(job)
    recent = times >= 700.0
    want = brute_auc(scores[recent], labels[recent])
    (line,) = [
        x
        for x in text.splitlines()
        if x.startswith(f'{metric_names.ONLINE_AUC_RECENT}{{model_version="v7"}}')
    ]
    assert abs(float(line.split()[-1]) - want) < 1e-9
    assert f'{metric_names.ONLINE_AUC_RECENT_SAMPLES}{{model_version="v7"}} {float(recent.sum())}' in text
    (whole,) = [
        x for x in text.splitlines() if x.startswith(f'{metric_names.ONLINE_AUC}{{model_version="v7"}}')
    ]
    assert abs(float(whole.split()[-1]) - want) > 0.1
