"""The probe check shared by publish (retrain) and load (inference): one definition, so they cannot disagree."""

from __future__ import annotations

import numpy as np
import pytest

from forkcast_contract.registry_format import PROBE_TOLERANCE, probe_gap


def test_gap_is_absolute_up_to_one_and_relative_above() -> None:
    reference = np.array([0.5, -0.2, 20.0, -40.0])
    assert probe_gap(reference, reference) == 0.0
    # 1.1e-5 on a logit of 20 is float32 rounding of an exact computation: within tolerance (the drill's case).
    assert probe_gap(reference + np.array([0, 0, 1.1e-5, 0]), reference) == pytest.approx(5.5e-7)
    assert probe_gap(reference + np.array([0, 0, 1.1e-5, 0]), reference) <= PROBE_TOLERANCE
    # The same 1.1e-5 on a logit below 1 is not.
    assert probe_gap(reference + np.array([1.1e-5, 0, 0, 0]), reference) > PROBE_TOLERANCE
    # A wrong model is far outside whatever the magnitude.
    assert probe_gap(reference * 1.001, reference) > PROBE_TOLERANCE


def test_gap_of_nan_is_not_within_tolerance() -> None:
    """A NaN logit must fail the ``gap <= tolerance`` checks (NaN compares false), never pass them."""
    gap = probe_gap(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert not gap <= PROBE_TOLERANCE
