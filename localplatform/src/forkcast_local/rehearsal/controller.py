"""The Rollout controller's canary loop for one update: steps, analysis runs, pauses, abort and progress deadline.

Followed from github.com/argoproj/argo-rollouts: rollout/canary.go (completedCurrentCanaryStep: a setWeight step
is done when the counts are at their desired values, a pause when its duration has passed, an analysis step when
its run is Successful), rollout/analysis.go (reconcileBackgroundAnalysisRun / reconcileStepBasedAnalysisRun:
Failed or Error aborts, Inconclusive adds the InconclusiveAnalysis pause condition, a background run starts at
``startingStep``), rollout/sync.go (evaluateProgressDeadlineAbort: no progress for progressDeadlineSeconds outside
a pause or analysis step aborts when progressDeadlineAbort, else the Rollout is Degraded; isIndefiniteStep),
utils/conditions/conditions.go (RolloutProgressing: more available or ready pods, a step index or stable change),
utils/replicaset/canary.go GetCurrentSetWeight (an aborted Rollout's weight is 0: the canary is scaled to 0 and
traffic is all on stable again) and utils/rollout/rolloututil.go CalculateRolloutPhase (the phase and message).

The controller is pure: each ``reconcile(now, …)`` reads the pods the runner observed (available = ready) and
returns the ``.spec.replicas`` it wants for the canary and the stable ReplicaSet; durations are divided by
``time_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forkcast_local.rehearsal.analysis import AnalysisRun, Measure
from forkcast_local.rehearsal.replicas import ReplicaSet, at_desired_counts, basic_canary_counts
from forkcast_local.rehearsal.spec import AnalysisRef, RolloutSpec, resolve_args

# rolloututil.go / conditions.go names for the phases and reasons the rehearsal reports.
PAUSE_STEP = "CanaryPauseStep"
PAUSE_INCONCLUSIVE = "InconclusiveAnalysis"
ABORTED = "RolloutAborted"
TIMED_OUT = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class Verdict:
    """Why the Rollout ended, as the drills assert it: what decided (background / step N / progress deadline),
    which template and metric, the run's phase and Argo's message."""

    decided_by: str
    phase: str
    message: str
    template: str | None = None
    metric: str | None = None


@dataclass
class Status:
    phase: str  # Progressing | Paused | Degraded | Healthy
    message: str
    step_index: int
    weight: int
    canary_replicas: int
    stable_replicas: int
    verdict: Verdict | None
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["verdict"] = vars(self.verdict) if self.verdict else None
        return out


class CanaryController:
    """One canary update of ``spec`` from a fully available stable to Healthy (promoted), Paused or Degraded."""

    def __init__(
        self,
        spec: RolloutSpec,
        *,
        canary_hash: str,
        stable_hash: str,
        started_at: float,
        time_scale: float = 1.0,
    ) -> None:
        self.spec, self.scale = spec, time_scale
        self.hashes = {"Latest": canary_hash, "Stable": stable_hash}
        self.canary = ReplicaSet(0, 0)
        self.stable: ReplicaSet | None = ReplicaSet(spec.replicas, spec.replicas)
        self.step_index = 0
        self.abort_message: str | None = None
        self.timed_out = False
        self.promoted = False
        self.pauses: set[str] = set()
        self.pause_started: float | None = None
        self.background: AnalysisRun | None = None
        self.step_run: AnalysisRun | None = None
        self.verdict: Verdict | None = None
        self.last_progress = started_at
        self.events: list[str] = []

    # -- analysis -------------------------------------------------------------------------------------------------
    def _run(self, name: str, ref: AnalysisRef, now: float) -> AnalysisRun:
        templates = [self.spec.templates[t] for t in ref.templates]
        args = resolve_args(self.spec, ref, self.hashes)
        self.events.append(f"{now:.3f} AnalysisRun {name} created ({', '.join(ref.templates)})")
        return AnalysisRun(name, templates, args, now, self.scale)

    def _outcome(self, run: AnalysisRun, decided_by: str, kind: str) -> None:
        """The Rollout's reaction to a completed run (rollout/analysis.go)."""
        if run.phase == "Inconclusive":
            self.pauses.add(PAUSE_INCONCLUSIVE)
        if run.phase in ("Inconclusive", "Failed", "Error"):
            deciding = run.deciding()
            self.verdict = Verdict(
                decided_by,
                run.phase,
                run.message,
                deciding.metric.template if deciding else None,
                deciding.metric.name if deciding else None,
            )
        if run.phase in ("Failed", "Error"):
            detail = f": {run.message}" if run.message else ""
            self._abort(f"{kind} analysis phase error/failed{detail}")

    def _analyse(self, now: float, measure: Measure) -> None:
        if PAUSE_INCONCLUSIVE in self.pauses:
            return  # a paused Rollout waits for a person; no new runs (reconcileBackgroundAnalysisRun)
        bg = self.spec.background
        if bg is not None and self.step_index >= self.spec.background_starting_step:
            if self.background is None:
                self.background = self._run("background", bg, now)
            if self.background.reconcile(now, measure) != "Running":
                self._outcome(self.background, "background", "Background")
        step = self._step()
        if self.abort_message is None and step is not None and step.analysis is not None and not self.pauses:
            if self.step_run is None:
                self.step_run = self._run(f"step-{self.step_index}", step.analysis, now)
            if self.step_run.reconcile(now, measure) != "Running":
                self._outcome(self.step_run, f"step {self.step_index}", "Step-based")

    # -- steps ----------------------------------------------------------------------------------------------------
    def _step(self) -> Any:
        steps = self.spec.steps
        return steps[self.step_index] if self.step_index < len(steps) else None

    def weight(self) -> int:
        """GetCurrentSetWeight: 0 when aborted, the last setWeight at or before the step, 100 past the last."""
        if self.abort_message is not None:
            return 0
        if self.step_index >= len(self.spec.steps):
            return 100
        for step in reversed(self.spec.steps[: self.step_index + 1]):
            if step.kind == "setWeight":
                return int(step.weight)
        return 0

    def _abort(self, message: str) -> None:
        if self.abort_message is None:
            self.abort_message = message
            self.events.append(f"abort: {message}")
            for run in (self.background, self.step_run):
                if run is not None:
                    run.terminate()  # cancelAnalysisRuns

    def _completed_step(self, now: float) -> bool:
        step = self._step()
        if step is None:
            return False
        if step.kind == "setWeight":
            return at_desired_counts(self.spec, self.weight(), self.canary, self.stable)
        if step.kind == "pause":
            if step.pause_s is None:
                self.pauses.add(PAUSE_STEP)  # an indefinite pause: a person promotes
                return False
            if self.pause_started is None:
                self.pause_started = now
                self.pauses.add(PAUSE_STEP)
            if now >= self.pause_started + step.pause_s / self.scale:
                self.pauses.discard(PAUSE_STEP)
                self.pause_started = None
                return True
            return False
        return self.step_run is not None and self.step_run.phase == "Successful"

    def _indefinite_step(self) -> bool:
        """isIndefiniteStep: a pause or analysis step (or a paused Rollout) does not count against the deadline."""
        step = self._step()
        return bool(self.pauses) or (step is not None and step.kind in ("pause", "analysis"))

    # -- the loop ---------------------------------------------------------------------------------------------------
    def reconcile(self, now: float, canary_available: int, stable_available: int, measure: Measure) -> Status:
        """One controller pass at ``now`` given the pods that are available (ready) in each ReplicaSet."""
        before = (self.canary.available, self.step_index, self.promoted)
        self.canary = ReplicaSet(self.canary.replicas, canary_available)
        if self.stable is not None:
            self.stable = ReplicaSet(self.stable.replicas, stable_available)
        if not self.promoted and self.abort_message is None:
            self._analyse(now, measure)
        new_n, stable_n = basic_canary_counts(self.spec, self.weight(), self.canary, self.stable)
        self.canary = ReplicaSet(new_n, self.canary.available)
        if self.stable is not None:
            self.stable = ReplicaSet(stable_n, self.stable.available)
        if self.abort_message is None and not self.timed_out and not self.promoted:
            if self.step_index < len(self.spec.steps):
                if not (self.pauses - {PAUSE_STEP}) and self._completed_step(now):
                    self.events.append(f"{now:.3f} step {self.step_index} ({self._step().kind}) completed")
                    self.step_index += 1
                    self.step_run = None
            elif at_desired_counts(self.spec, 100, self.canary, self.stable):
                # Fully promoted: the canary becomes the stable ReplicaSet, the old one is scaled down.
                self.promoted, self.stable = True, None
                if self.background is not None:
                    self.background.terminate()
                self.events.append(f"{now:.3f} promoted: canary is the new stable")
        after = (self.canary.available, self.step_index, self.promoted)
        if after[0] > before[0] or after[1:] != before[1:]:
            self.last_progress = now
        self._deadline(now)
        return self.status()

    def _deadline(self, now: float) -> None:
        """evaluateProgressDeadlineAbort / RolloutTimedOut."""
        if self.abort_message is not None or self.promoted or self.timed_out or self._indefinite_step():
            return
        if now <= self.last_progress + self.spec.progress_deadline_s / self.scale:
            return
        message = f'ReplicaSet "{self.spec.name}-{self.hashes["Latest"]}" has timed out progressing.'
        self.verdict = Verdict("progressDeadline", TIMED_OUT, message)
        if self.spec.progress_deadline_abort:
            self._abort(message)
            # The abort scales the canary down in the same pass (GetCurrentSetWeight is 0 once aborted).
            new_n, stable_n = basic_canary_counts(self.spec, 0, self.canary, self.stable)
            self.canary = ReplicaSet(new_n, self.canary.available)
            if self.stable is not None:
                self.stable = ReplicaSet(stable_n, self.stable.available)
        else:
            self.timed_out = True

    def status(self) -> Status:
        """CalculateRolloutPhase: aborted or timed out is Degraded with the reason; a pause condition is Paused."""
        if self.abort_message is not None:
            phase, message = "Degraded", f"{ABORTED}: {self.abort_message}"
        elif self.timed_out:
            phase, message = "Degraded", f"{TIMED_OUT}: {self.verdict.message if self.verdict else ''}"
        elif self.pauses:
            phase, message = "Paused", sorted(self.pauses - {PAUSE_STEP} or self.pauses)[0]
        elif self.promoted and self.canary.available == self.spec.replicas:
            phase, message = "Healthy", ""
        else:
            phase, message = "Progressing", ""
        return Status(
            phase,
            message,
            self.step_index,
            self.weight(),
            self.canary.replicas,
            self.stable.replicas if self.stable is not None else 0,
            self.verdict,
            list(self.events),
        )

    def next_wakeup(self) -> float | None:
        """The earliest time something is due on its own (a measurement or a pause ending): the runner sleeps
        until then or until a pod changes."""
        times = [r.next_due() for r in (self.background, self.step_run) if r is not None]
        step = self._step()
        if (
            step is not None
            and step.kind == "pause"
            and step.pause_s is not None
            and self.pause_started is not None
        ):
            times.append(self.pause_started + step.pause_s / self.scale)
        due = [t for t in times if t is not None]
        return min(due) if due else None
