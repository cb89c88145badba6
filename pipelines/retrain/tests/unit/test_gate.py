"""The gate's performance checks, one refusal reason at a time (unit: metrics in, named checks out).

Each case names the one check that must fail and asserts every other check passed, so a refusal is never
credited to the wrong rule.
"""

from __future__ import annotations

import pytest

from forkcast_retrain.gate import _performance_checks
from forkcast_retrain.gate_policy import GateThresholds

T = GateThresholds()  # auc_floor 0.65, accuracy_floor 0.7, ε 0.005, logloss margin 0.01
GOOD = {"roc_auc": 0.80, "accuracy": 0.75, "logloss": 0.50}


def failed(
    challenger: dict[str, float], champion: dict[str, float] | None, recent: dict[str, float] | None = None
) -> list[str]:
    return [c.name for c in _performance_checks(challenger, champion, T, recent) if not c.passed]


def test_a_good_challenger_passes_every_check() -> None:
    assert failed(GOOD, GOOD, {"v1": 0.80, "v0": 0.802}) == []


@pytest.mark.parametrize(
    ("challenger", "reason"),
    [
        ({**GOOD, "roc_auc": 0.64}, "auc_floor"),
        # The original assignment's bar: 0.69 accuracy fails even with an AUC above its floor.
        ({**GOOD, "accuracy": 0.69}, "accuracy_floor"),
    ],
    ids=["auc", "accuracy"],
)
def test_absolute_floors_without_a_champion(challenger: dict[str, float], reason: str) -> None:
    assert failed(challenger, None) == [reason]


def test_more_than_epsilon_below_the_current_champion_fails() -> None:
    assert set(failed({**GOOD, "roc_auc": 0.79}, GOOD, {"v1": 0.80})) == {
        "auc_vs_champion",
        "auc_vs_recent_champions",
    }


def test_a_worse_logloss_fails() -> None:
    assert failed({**GOOD, "logloss": 0.52}, GOOD) == ["logloss_vs_champion"]


def test_a_slide_of_epsilon_per_release_stops_at_the_best_recent_champion() -> None:
    """Each release loses 0.004 (< ε) to the one before: against the current champion alone every one passes,
    but the third is more than ε below the best of the recent champions and is refused by that check alone."""
    history = {"v2": 0.792, "v1": 0.796, "v0": 0.800}  # newest first; v2 is the current champion
    champion = {**GOOD, "roc_auc": 0.792}
    slid = {**GOOD, "roc_auc": 0.788}
    assert failed(slid, champion) == []  # what the gate said before: the slide went on for ever
    checks = {c.name: c for c in _performance_checks(slid, champion, T, history)}
    assert [n for n, c in checks.items() if not c.passed] == ["auc_vs_recent_champions"]
    assert (
        "(v0)" in checks["auc_vs_recent_champions"].detail
        and "0.7950" in checks["auc_vs_recent_champions"].detail
    )
