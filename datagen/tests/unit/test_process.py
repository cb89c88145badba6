"""The generative process against SPEC §2: exact tables, calibrated clicks, valid requests."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_contract.dataset import BANGKOK
from forkcast_data.process import click_logit, draw_clicks, draw_entities, draw_requests, sigmoid


@pytest.fixture(scope="module")
def full_entities():  # type: ignore[no-untyped-def]
    """Steps 1-2 at the original's full size (about 2 s)."""
    return draw_entities(1_000_000, 100_000)


def test_full_size_tables_reproduce_the_original_check_values(full_entities) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(
        full_entities.users[0, :5], [0.8917134, 1.4105743, -0.0700553, -0.0147080, -1.2015735], atol=5e-7
    )
    np.testing.assert_allclose(
        full_entities.restaurants[0, :5],
        [1.5480332, 0.8311060, -1.2388457, -1.7764066, -1.4240013],
        atol=5e-7,
    )
    assert full_entities.latitude[0] == 13.695628584049485
    assert full_entities.longitude[0] == 100.78247322874537


def test_vectorised_tables_equal_the_original_per_entity_loop() -> None:
    n_users, n_rest = 300, 200
    np.random.seed(7)
    centers = np.random.randn(10, 30) * 2
    assign = np.random.choice(10, size=n_users)
    users = np.array([np.random.normal(loc=centers[assign[i]], scale=0.1, size=30) for i in range(n_users)])
    r_centers = np.random.randn(10, 10) * 2
    r_assign = np.random.choice(10, size=n_rest)
    rests = np.array(
        [np.random.normal(loc=r_centers[r_assign[i]], scale=0.1, size=10) for i in range(n_rest)]
    )
    lat = np.random.uniform(BANGKOK.min_lat, BANGKOK.max_lat, size=(n_rest, 1))[:, 0]
    lng = np.random.uniform(BANGKOK.min_lng, BANGKOK.max_lng, size=(n_rest, 1))[:, 0]

    e = draw_entities(n_users, n_rest)
    np.testing.assert_array_equal(e.users, users.astype(np.float32))
    np.testing.assert_array_equal(e.restaurants, rests.astype(np.float32))
    np.testing.assert_array_equal(e.latitude, lat)
    np.testing.assert_array_equal(e.longitude, lng)


def test_full_size_click_rate_matches_the_original(full_entities) -> None:  # type: ignore[no-untyped-def]
    _, _, clicks = draw_clicks(full_entities, 625_000, seed=7, split="train", index=0)
    assert clicks.mean() == pytest.approx(0.462, abs=0.004)


def test_clicks_are_calibrated_against_the_sigmoid_of_the_dot_product() -> None:
    """Binned by the true probability, the click rate in each bin must match it (a wrong process does not)."""
    e = draw_entities(10_000, 2_000)
    users, rests, clicks = draw_clicks(e, 400_000, seed=11, split="train", index=0)
    p = sigmoid(click_logit(e.users, e.restaurants, users, rests))
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for b in range(10):
        in_bin = bins == b
        # 40k rows per bin: the binomial s.e. is <= 0.0025; logit noise N(0, 0.1) moves the mean by < 0.002.
        assert clicks[in_bin].mean() == pytest.approx(p[in_bin].mean(), abs=0.012), f"bin {b}"
    # Uniform ids: every user and restaurant index is drawn and none out of range.
    assert users.min() >= 0 and users.max() < 10_000 and rests.max() < 2_000
    assert len(np.unique(rests)) == 2_000


def test_click_files_are_independent_reproducible_streams() -> None:
    e = draw_entities(1_000, 500)
    a = draw_clicks(e, 1_000, seed=7, split="train", index=3)
    b = draw_clicks(e, 1_000, seed=7, split="train", index=3)
    c = draw_clicks(e, 1_000, seed=7, split="test", index=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def _haversine_m(lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray) -> np.ndarray:
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lng2 - lng1)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(h))


def test_requests_follow_the_process(full_entities) -> None:  # type: ignore[no-untyped-def]
    r = draw_requests(1_000_000, 100_000, 2_000, 1_000, seed=7)
    assert len(np.unique(r.user_id)) == 2_000
    assert all(len(np.unique(row)) == 1_000 for row in r.candidates)
    assert r.candidates.min() >= 0 and r.candidates.max() < 100_000
    assert set(np.unique(r.size)) == set(range(100, 1_001, 100))
    assert set(np.unique(r.max_dist)) == set(range(5_000, 10_001, 1_000))
    assert 0.45 < r.sort_dist.mean() < 0.55
    assert (r.latitude >= BANGKOK.min_lat).all() and (r.latitude <= BANGKOK.max_lat).all()
    assert (r.longitude >= BANGKOK.min_lng).all() and (r.longitude <= BANGKOK.max_lng).all()
    # SPEC §2: of 1,000 candidates about 18 lie within 5 km, 36 within 7 km, 70 within 10 km.
    d = _haversine_m(
        r.latitude[:, None],
        r.longitude[:, None],
        full_entities.latitude[r.candidates],
        full_entities.longitude[r.candidates],
    )
    for metres, expected in [(5_000, 18), (7_000, 36), (10_000, 70)]:
        assert (d <= metres).sum(axis=1).mean() == pytest.approx(expected, rel=0.1)


def test_requests_refuse_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="distinct candidates"):
        draw_requests(100, 500, 10, 1_000, seed=7)
    with pytest.raises(ValueError, match="distinct users"):
        draw_requests(5, 5_000, 10, 1_000, seed=7)


def test_drift_moves_cluster_centres_and_keeps_each_entity_in_its_cluster() -> None:
    base = draw_entities(5_000, 1_000)
    assert np.array_equal(draw_entities(5_000, 1_000, drift=0.0).users, base.users)
    weak = draw_entities(5_000, 1_000, drift=0.5)
    strong = draw_entities(5_000, 1_000, drift=1.0)
    np.testing.assert_array_equal(weak.user_assign, base.user_assign)
    shift_weak = np.linalg.norm(weak.users - base.users, axis=1)
    shift_strong = np.linalg.norm(strong.users - base.users, axis=1)
    # Every member of a cluster moves by the same offset (up to float32 rounding); the strength scales it.
    for k in range(10):
        members = base.user_assign == k
        assert np.ptp(shift_weak[members]) < 1e-4
    np.testing.assert_allclose(shift_strong, 2 * shift_weak, rtol=1e-4)
    assert shift_weak.mean() > 2.0  # centre-sized: ~ 0.5 * 2 * sqrt(30)
    np.testing.assert_array_equal(weak.latitude, base.latitude)
