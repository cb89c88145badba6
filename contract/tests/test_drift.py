"""forkcast_contract.drift's served-score space: probe logits become the probabilities a client is served."""

from __future__ import annotations

import warnings

import numpy as np

from forkcast_contract import drift


def test_served_scores_are_the_sigmoid_without_overflow() -> None:
    x = np.linspace(-30.0, 30.0, 601)
    assert np.allclose(drift.served_scores(x), 1.0 / (1.0 + np.exp(-x)), rtol=0, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1 / (1 + exp(1000)) would warn about overflow
        extremes = drift.served_scores(np.array([-1000.0, 0.0, 1000.0], dtype=np.float32))
    assert extremes.tolist() == [0.0, 0.5, 1.0]


def test_a_probe_profiled_as_served_reads_no_drift_against_the_same_scores_served() -> None:
    logits = np.random.default_rng(0).normal(0.0, 3.0, size=4000)
    profile = drift.histogram(drift.served_scores(logits))
    served = drift.served_scores(np.random.default_rng(1).normal(0.0, 3.0, size=4000))
    assert drift.psi_against(profile, served) < 0.02
    assert drift.psi_against(drift.histogram(logits), served) > 5.0  # the two spaces mixed: what the job read
