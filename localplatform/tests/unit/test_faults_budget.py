"""The MLflow-down drill's bound: one call's retry budget, as MLflow's own retry object computes its sleeps.

The drill bounds how long ``gate`` may take to fail with MLflow frozen by the same step's time with MLflow answering
plus :func:`mlflow_retry_budget_s`; that budget must be what MLflow really waits, or the bound says nothing. Checked
against ``mlflow.utils.request_utils.JitteredRetry`` (urllib3's ``Retry`` plus MLflow's jitter) with its random
jitter at its largest.
"""

from __future__ import annotations

import random

import pytest
from mlflow.utils.request_utils import JitteredRetry
from urllib3.exceptions import ReadTimeoutError

from forkcast_local.drills.faults import MLFLOW_DRILL_ENV, gate_retry_env, mlflow_retry_budget_s
from forkcast_retrain.tracking import HTTP_DEFAULTS


def _mlflow_sleeps(env: dict[str, str]) -> list[float]:
    """The sleep MLflow's retry takes after each failed try but the last (every try a read timeout)."""
    retries = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    retry = JitteredRetry(
        total=retries,
        read=retries,
        backoff_factor=float(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]),
        backoff_jitter=float(env["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]),
        allowed_methods=None,
    )
    sleeps = []
    for _ in range(retries):
        retry = retry.increment(method="GET", url="/", error=ReadTimeoutError(None, "/", "timed out"))  # type: ignore[arg-type]
        sleeps.append(retry.get_backoff_time())
    with pytest.raises(Exception, match="Max retries"):  # the next failure is the last: no sleep after it
        retry.increment(method="GET", url="/", error=ReadTimeoutError(None, "/", "timed out"))  # type: ignore[arg-type]
    return sleeps


@pytest.mark.parametrize(
    "overrides",
    [{}, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5"}],
)
def test_the_retry_budget_is_every_timeout_plus_mlflows_own_sleeps(
    overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**gate_retry_env(), **overrides}
    monkeypatch.setattr(random, "random", lambda: 1.0)  # the jitter at its largest
    tries = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) + 1
    expected = tries * float(env["MLFLOW_HTTP_REQUEST_TIMEOUT"]) + sum(_mlflow_sleeps(env))
    assert mlflow_retry_budget_s(env) == pytest.approx(expected)


def test_the_drilled_gate_runs_the_release_steps_own_retries_with_a_short_timeout() -> None:
    """The drill guards forkcast_retrain's retry defaults: it may shorten the per-try timeout, nothing else."""
    env = gate_retry_env()
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]
    assert set(MLFLOW_DRILL_ENV) == {"MLFLOW_HTTP_REQUEST_TIMEOUT"}
    assert mlflow_retry_budget_s(env) == pytest.approx(11.0)  # 3 tries × 2 s + sleeps of ≤ 1 s and ≤ 4 s
