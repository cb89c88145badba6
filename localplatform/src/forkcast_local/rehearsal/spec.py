"""The inference Rollout's canary and its AnalysisTemplates, read from a rendered overlay (never a copy of the YAML).

Only what the rehearsal can reproduce faithfully is accepted: a basic canary (no trafficRouting), steps that are
``setWeight``, ``pause`` or ``analysis``, Prometheus metrics whose conditions ``conditions`` understands, and args the
Rollout can resolve (a literal, ``metadata.*`` fieldRefs, ``podTemplateHashValue``). Anything else raises SpecError
naming it, before a pod starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from forkcast_local.rehearsal.conditions import Condition, ConditionError, parse

Doc = dict[str, Any]

# Go's time.ParseDuration, which Argo's DurationString.Duration() calls (pkg/apis/rollouts/v1alpha1/
# analysis_types.go), for the units a rollout uses: "5m", "30s", "1m30s", "1.5h", "500ms".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Argo substitutes {{args.NAME}} with fasttemplate, "{{" and "}}" delimiters, the tag taken verbatim
# (utils/template/template.go ResolveArgs): "{{ args.x }}" would not resolve, so it is refused here as well.
_ARG = re.compile(r"\{\{(.*?)\}\}")
_ARG_TAG = re.compile(r"args\.([\w-]+)")
# Argo's defaults for fields the Rollout leaves out (utils/defaults/defaults.go): maxSurge / maxUnavailable "25"
# (a percentage), progressDeadlineSeconds 600, consecutiveErrorLimit 4.
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_PROGRESS_DEADLINE_S = 600
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4


class SpecError(ValueError):
    """A Rollout or AnalysisTemplate the rehearsal cannot reproduce faithfully (the message names what)."""


def duration_s(text: str | int) -> float:
    """Seconds of an Argo duration string (Go's time.ParseDuration; a bare integer is refused as Go refuses it)."""
    raw = str(text).strip()
    parts = _DURATION_PART.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise SpecError(f"duration {text!r} is not a Go duration (e.g. 30s, 5m, 1m30s)")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """Kubernetes' intstr.GetScaledValueFromIntOrPercent: "25%" of ``total``, rounded up or down."""
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        raise SpecError(f"{value!r} is neither an integer nor a percentage")
    exact = total * int(value[:-1]) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True)
class Metric:
    """One metric of an AnalysisTemplate, as Argo's Metric type holds it (analysis_types.go)."""

    template: str
    name: str
    query: str  # {{args.*}} still in it
    success: Condition
    failure: Condition
    interval_s: float | None
    initial_delay_s: float
    count: int | None
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int

    @property
    def effective_count(self) -> int | None:
        """Metric.EffectiveCount (analysis_types.go): no count and no interval means one measurement."""
        if not self.count:
            return None if self.interval_s is not None else 1
        return self.count


@dataclass(frozen=True)
class Template:
    name: str
    defaults: dict[str, str | None]  # arg -> default value (None: the Rollout must pass it)
    metrics: tuple[Metric, ...]


@dataclass(frozen=True)
class ArgSource:
    """A Rollout analysis arg: a literal value, a fieldRef path, or a pod template hash (Latest / Stable)."""

    name: str
    value: str | None = None
    field_path: str | None = None
    pod_hash: str | None = None


@dataclass(frozen=True)
class AnalysisRef:
    templates: tuple[str, ...]
    args: tuple[ArgSource, ...]


@dataclass(frozen=True)
class Step:
    kind: str  # setWeight | pause | analysis
    weight: int = 0
    pause_s: float | None = None  # None: an indefinite pause (a person resumes)
    analysis: AnalysisRef | None = None


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    namespace: str
    replicas: int
    max_surge: int | str
    max_unavailable: int | str
    progress_deadline_s: float
    progress_deadline_abort: bool
    steps: tuple[Step, ...]
    background: AnalysisRef | None
    background_starting_step: int
    templates: dict[str, Template]
    pod_template: Doc

    def field(self, path: str) -> str:
        """A ``metadata.*`` fieldRef of the Rollout (utils/analysis/factory.go BuildArgumentsForRolloutAnalysisRun)."""
        if path == "metadata.namespace":
            return self.namespace
        if path == "metadata.name":
            return self.name
        raise SpecError(f"fieldRef {path!r} is not resolved by the rehearsal")


def _condition(metric: Doc, key: str, where: str) -> Condition:
    text = metric.get(key)
    if not text:
        # With one condition missing, Argo derives it as the negation of the other (evaluate.go EvaluateResult),
        # so missing data could never be Inconclusive; the rehearsal requires both.
        raise SpecError(f"{where} has no {key}")
    try:
        return parse(text)
    except ConditionError as exc:
        raise SpecError(f"{where} {key}: {exc}") from exc


def _template(doc: Doc) -> Template:
    name = doc["metadata"]["name"]
    spec = doc["spec"]
    defaults = {a["name"]: (str(a["value"]) if "value" in a else None) for a in spec.get("args", [])}
    metrics = []
    for m in spec["metrics"]:
        where = f"AnalysisTemplate {name} metric {m['name']}"
        if set(m.get("provider", {})) != {"prometheus"}:
            raise SpecError(
                f"{where}: only the prometheus provider is rehearsed, not {sorted(m.get('provider', {}))}"
            )
        query = m["provider"]["prometheus"]["query"]
        for tag in _ARG.findall(query):
            tag_match = _ARG_TAG.fullmatch(tag)
            if tag_match is None or tag_match[1] not in defaults:
                raise SpecError(f"{where}: query placeholder {{{{{tag}}}}} is not one of the template's args")
        metrics.append(
            Metric(
                template=name,
                name=m["name"],
                query=query,
                success=_condition(m, "successCondition", where),
                failure=_condition(m, "failureCondition", where),
                interval_s=duration_s(m["interval"]) if "interval" in m else None,
                initial_delay_s=duration_s(m["initialDelay"]) if "initialDelay" in m else 0.0,
                count=int(m["count"]) if "count" in m else None,
                failure_limit=int(m.get("failureLimit", 0)),
                inconclusive_limit=int(m.get("inconclusiveLimit", 0)),
                consecutive_error_limit=int(m.get("consecutiveErrorLimit", DEFAULT_CONSECUTIVE_ERROR_LIMIT)),
            )
        )
    return Template(name, defaults, tuple(metrics))


def _arg(raw: Doc) -> ArgSource:
    if "value" in raw:
        return ArgSource(raw["name"], value=str(raw["value"]))
    source = raw.get("valueFrom", {})
    if "podTemplateHashValue" in source:
        if source["podTemplateHashValue"] not in ("Latest", "Stable"):
            raise SpecError(f"arg {raw['name']}: podTemplateHashValue {source['podTemplateHashValue']!r}")
        return ArgSource(raw["name"], pod_hash=source["podTemplateHashValue"])
    if "fieldRef" in source and source["fieldRef"]["fieldPath"].startswith("metadata."):
        return ArgSource(raw["name"], field_path=source["fieldRef"]["fieldPath"])
    raise SpecError(f"arg {raw['name']}: {source!r} is not resolved by the rehearsal")


def _ref(raw: Doc, templates: Mapping[str, Template], where: str) -> AnalysisRef:
    names = tuple(t["templateName"] for t in raw.get("templates", []))
    if not names:
        raise SpecError(f"{where} names no AnalysisTemplate")
    args = tuple(_arg(a) for a in raw.get("args", []))
    passed = {a.name for a in args}
    for name in names:
        if name not in templates:
            raise SpecError(f"{where} names AnalysisTemplate {name}, which the render does not hold")
        needed = {k for k, v in templates[name].defaults.items() if v is None}
        if missing := needed - passed:
            raise SpecError(f"{where}: AnalysisTemplate {name} needs args {sorted(missing)}")
    return AnalysisRef(names, args)


def _step(raw: Doc, templates: Mapping[str, Template], index: int) -> Step:
    if "setWeight" in raw:
        return Step("setWeight", weight=int(raw["setWeight"]))
    if "pause" in raw:
        pause = raw["pause"] or {}
        return Step("pause", pause_s=duration_s(pause["duration"]) if "duration" in pause else None)
    if "analysis" in raw:
        return Step("analysis", analysis=_ref(raw["analysis"], templates, f"step {index} analysis"))
    raise SpecError(f"canary step {index} {raw!r} is not setWeight, pause or analysis")


def load(docs: Iterable[Doc], rollout: str = "inference") -> RolloutSpec:
    """The named Rollout of a render and every AnalysisTemplate it names, checked for what the rehearsal needs."""
    docs = list(docs)
    found = [d for d in docs if d.get("kind") == "Rollout" and d["metadata"]["name"] == rollout]
    if len(found) != 1:
        raise SpecError(f"the render holds {len(found)} Rollouts named {rollout}")
    doc = found[0]
    spec = doc["spec"]
    canary = spec.get("strategy", {}).get("canary")
    if canary is None:
        raise SpecError(f"Rollout {rollout} has no canary strategy")
    if "trafficRouting" in canary:
        raise SpecError("a traffic-routed canary is not rehearsed: the split here is the ready-pod ratio")
    templates = {d["metadata"]["name"]: _template(d) for d in docs if d.get("kind") == "AnalysisTemplate"}
    background = canary.get("analysis")
    return RolloutSpec(
        name=rollout,
        namespace=doc["metadata"].get("namespace", "default"),
        replicas=int(spec.get("replicas", 1)),
        max_surge=canary.get("maxSurge", DEFAULT_MAX_SURGE),
        max_unavailable=canary.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE),
        progress_deadline_s=float(spec.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_S)),
        progress_deadline_abort=bool(spec.get("progressDeadlineAbort", False)),
        steps=tuple(_step(s, templates, i) for i, s in enumerate(canary.get("steps", []))),
        background=_ref(background, templates, "background analysis") if background else None,
        background_starting_step=int((background or {}).get("startingStep", 0)),
        templates=templates,
        pod_template=spec["template"],
    )


def resolve_args(spec: RolloutSpec, ref: AnalysisRef, hashes: Mapping[str, str]) -> dict[str, str]:
    """The args an AnalysisRun gets (factory.go BuildArgumentsForRolloutAnalysisRun), keyed by name; ``hashes``
    maps "Latest" / "Stable" to the canary's and stable's pod template hashes."""
    out: dict[str, str] = {}
    for arg in ref.args:
        if arg.value is not None:
            out[arg.name] = arg.value
        elif arg.field_path is not None:
            out[arg.name] = spec.field(arg.field_path)
        else:
            out[arg.name] = hashes[arg.pod_hash or ""]
    return out


def render_query(metric: Metric, template: Template, args: Mapping[str, str]) -> str:
    """The metric's query with {{args.NAME}} substituted: the run's args over the template's defaults."""
    values = {k: v for k, v in template.defaults.items() if v is not None} | dict(args)

    def value(m: re.Match[str]) -> str:
        name = m[1].removeprefix("args.")
        if name not in values:
            raise SpecError(f"{metric.template}/{metric.name}: args.{name} was not resolved")
        return values[name]

    return _ARG.sub(value, metric.query)
