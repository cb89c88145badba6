"""An AnalysisRun as Argo's analysis controller runs it: when each metric measures, how results are counted, and
the run's phase.

Followed from github.com/argoproj/argo-rollouts analysis/analysis.go (functions named per rule below) and
utils/analysis/helpers.go. Time is passed in (``now``, seconds) and every duration is divided by ``time_scale``, so
the same code runs at cluster speed, compressed in a drill, or on a fake clock in the unit tests. A measurement is
``measure(metric, query) -> list[float]``; an exception from it is a measurement that errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from forkcast_local.rehearsal.conditions import EvaluationError
from forkcast_local.rehearsal.spec import Metric, Template, render_query

# DefaultErrorRetryInterval (analysis/analysis.go): after an Error measurement the next one is 10 s later,
# whatever the metric's interval.
ERROR_RETRY_S = 10.0
# analysisStatusOrder (utils/analysis/helpers.go), best to worst; a run's phase is its worst metric's.
ORDER = ("Successful", "Running", "Pending", "Inconclusive", "Error", "Failed")
COMPLETED = {"Successful", "Failed", "Inconclusive", "Error"}

Measure = Callable[[Metric, str], list[float]]


@dataclass
class Measurement:
    phase: str
    at: float
    value: list[float] | None = None
    message: str = ""


@dataclass
class MetricResult:
    """MetricResult's counters: Count counts Successful, Failed and Inconclusive (not Error); ConsecutiveError is
    reset by any measurement that is not an Error (runMeasurements)."""

    metric: Metric
    query: str
    phase: str = "Pending"
    message: str = ""
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    measurements: list[Measurement] = field(default_factory=list)

    def limit_breach(self) -> tuple[str, str]:
        """assessMetricFailureInconclusiveOrError: the phase a breached limit gives and why ("" when none); an
        Error breach wins over Inconclusive, which wins over Failed (later checks overwrite earlier ones)."""
        m = self.metric
        phase, message = "", ""
        if m.failure_limit >= 0 and self.failed > m.failure_limit:
            phase, message = "Failed", f"failed ({self.failed}) > failureLimit ({m.failure_limit})"
        if self.inconclusive > m.inconclusive_limit:
            phase = "Inconclusive"
            message = f"inconclusive ({self.inconclusive}) > inconclusiveLimit ({m.inconclusive_limit})"
        if self.consecutive_error > m.consecutive_error_limit:
            phase = "Error"
            message = (
                f"consecutiveErrors ({self.consecutive_error}) > consecutiveErrorLimit "
                f"({m.consecutive_error_limit})"
            )
        return phase, message


def evaluate(metric: Metric, result: list[float]) -> tuple[str, str]:
    """One measurement's phase (utils/evaluate/evaluate.go EvaluateResult): Failed when the failure condition holds,
    Successful when only the success condition does, Inconclusive when neither; an evaluation error is Error."""
    try:
        success = metric.success(result)
        failure = metric.failure(result)
    except EvaluationError as exc:
        return "Error", str(exc)
    if failure:
        return "Failed", ""
    return ("Successful", "") if success else ("Inconclusive", "")


class AnalysisRun:
    """The metrics of one or more templates with resolved args, measured on their schedule until the run ends."""

    def __init__(
        self,
        name: str,
        templates: list[Template],
        args: Mapping[str, str],
        started_at: float,
        time_scale: float = 1.0,
    ) -> None:
        self.name, self.started_at, self.scale = name, started_at, time_scale
        self.results = [MetricResult(m, render_query(m, t, args)) for t in templates for m in t.metrics]
        names = [r.metric.name for r in self.results]
        if len(set(names)) != len(names):
            raise ValueError(f"AnalysisRun {name}: metric names repeat across templates: {names}")
        self.phase = "Running"
        self.message = ""
        self.terminated = False  # Spec.Terminate: the Rollout no longer needs the run

    def _terminating(self) -> bool:
        """IsTerminating: asked to stop, or a metric already ended Failed, Error or Inconclusive."""
        return self.terminated or any(r.phase in ("Failed", "Error", "Inconclusive") for r in self.results)

    def _due(self, r: MetricResult, now: float) -> bool:
        """generateMetricTasks: whether metric ``r`` measures now."""
        if r.phase in COMPLETED or self._terminating():
            return False
        if not r.measurements:
            return now >= self.started_at + r.metric.initial_delay_s / self.scale
        limit = r.metric.effective_count
        if limit is not None and r.count >= limit:
            return False
        last = r.measurements[-1]
        interval = self._interval(r)
        return now > last.at + interval / self.scale

    @staticmethod
    def _interval(r: MetricResult) -> float:
        """The wait after the last measurement: the error retry after an Error, else the metric's interval."""
        last = r.measurements[-1]
        if last.phase == "Error" or r.metric.interval_s is None:
            return ERROR_RETRY_S
        return r.metric.interval_s

    def next_due(self) -> float | None:
        """calculateNextReconcileTime: when the next measurement is due (None: nothing left to measure)."""
        times = []
        for r in self.results:
            if r.phase in COMPLETED or self._terminating():
                continue
            if not r.measurements:
                times.append(self.started_at + r.metric.initial_delay_s / self.scale)
                continue
            limit = r.metric.effective_count
            if limit is not None and r.count >= limit:
                continue
            last = r.measurements[-1]
            if last.phase != "Error" and r.metric.interval_s is None:
                continue
            times.append(last.at + self._interval(r) / self.scale)
        return min(times) if times else None

    def _record(self, r: MetricResult, m: Measurement) -> None:
        """runMeasurements' bookkeeping."""
        r.measurements.append(m)
        if m.phase == "Error":
            r.error += 1
            r.consecutive_error += 1
            return
        r.count += 1
        r.consecutive_error = 0
        if m.phase == "Successful":
            r.successful += 1
        elif m.phase == "Failed":
            r.failed += 1
        else:
            r.inconclusive += 1

    def _metric_status(self, r: MetricResult) -> str:
        """assessMetricStatus."""
        if r.phase in COMPLETED:
            return r.phase
        terminating = self._terminating()
        if not r.measurements:
            return "Successful" if terminating else "Pending"
        breach, _ = r.limit_breach()
        if breach:
            return breach
        limit = r.metric.effective_count
        if limit is not None and r.count >= limit:
            return "Successful"
        return "Successful" if terminating else "Running"

    def reconcile(self, now: float, measure: Measure) -> str:
        """Take the measurements due at ``now``, then assess the run (reconcileAnalysisRun); returns the phase."""
        if self.phase in COMPLETED:
            return self.phase
        for r in self.results:
            if not self._due(r, now):
                continue
            try:
                value = measure(r.metric, r.query)
            except Exception as exc:  # any provider failure is an Error measurement in Argo
                self._record(r, Measurement("Error", now, None, f"{type(exc).__name__}: {exc}"))
                continue
            phase, message = evaluate(r.metric, value)
            self._record(r, Measurement(phase, now, value, message))
        self._assess()
        return self.phase

    def terminate(self) -> None:
        """Spec.Terminate (the Rollout cancels the run): what has not failed ends Successful."""
        self.terminated = True
        if self.phase not in COMPLETED:
            self._assess()

    def _assess(self) -> None:
        """assessRunStatus: Running until every metric completes (or the run terminates), then the worst phase,
        with the message of the metric that set it."""
        worst, message, everything_completed = "", "", True
        for r in self.results:
            status = self._metric_status(r)
            if status != r.phase:
                r.phase = status
                r.message = r.measurements[-1].message if r.measurements else ""
            if status not in COMPLETED:
                everything_completed = False
                continue
            _, why = r.limit_breach()
            if not worst or ORDER.index(status) > ORDER.index(worst):
                worst = status
                if why:
                    message = f'Metric "{r.metric.name}" assessed {status} due to {why}'
                    if r.message:
                        message += f': "Error Message: {r.message}"'
        if self._terminating():
            self.phase, self.message = worst or "Successful", message
        elif everything_completed and worst:
            self.phase, self.message = worst, message

    def deciding(self) -> MetricResult | None:
        """The metric whose result set the run's phase (the worst one), for a report that names its reason."""
        done = [r for r in self.results if r.phase in COMPLETED]
        return max(done, key=lambda r: ORDER.index(r.phase)) if done else None
