"""The canary as written in ``rollouts/``: the Rollout's steps, its AnalysisTemplates, and their conditions.

The drill must test the manifests that ship, not a copy of them, so everything it does is read from the two YAML
files. Conditions are Argo's expr strings; only the subset the templates use is understood (``len(result) OP N``,
``result[I] OP N``, ``isNaN(result[I])``, joined by ``&&`` or ``||``, no mixing, no parentheses), and anything else is
refused with the offending text rather than guessed at: a template the drill cannot read must not pass.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROLLOUTS = Path(__file__).parents[3] / "rollouts"
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NUM = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_LEN = re.compile(rf"^len\(result\)\s*(<=|>=|==|!=|<|>)\s*({_NUM})$")
_ITEM = re.compile(rf"^result\[(\d+)\]\s*(<=|>=|==|!=|<|>)\s*({_NUM})$")
_NAN = re.compile(r"^isNaN\(result\[(\d+)\]\)$")
_ARG = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")
_UNITS = {"s": 1, "m": 60, "h": 3600}


class SpecError(ValueError):
    """A manifest the drill cannot read faithfully (unknown condition syntax, missing arg, odd duration)."""


def seconds(text: str | int) -> float:
    """Argo durations as the manifests write them (``5m``, ``30s``, ``1h``, or a bare number of seconds)."""
    if isinstance(text, int):
        return float(text)
    match = re.fullmatch(r"(\d+)([smh])", text.strip())
    if not match:
        raise SpecError(f"duration {text!r} is not N[s|m|h]")
    return float(int(match[1]) * _UNITS[match[2]])


def _atom(text: str, result: list[float]) -> bool:
    if m := _LEN.match(text):
        return _OPS[m[1]](float(len(result)), float(m[2]))
    if m := _ITEM.match(text):
        i = int(m[1])
        return i < len(result) and _OPS[m[2]](result[i], float(m[3]))
    if m := _NAN.match(text):
        i = int(m[1])
        return i < len(result) and math.isnan(result[i])
    raise SpecError(f"condition term {text!r} is outside the supported subset")


def check_condition(expr: str) -> None:
    """Refuse, before anything starts, a condition the evaluator would not understand."""
    evaluate(expr, [])


def evaluate(expr: str, result: list[float]) -> bool:
    """The value of an Argo condition on a Prometheus vector's values (``result``), without ``eval``."""
    text = expr.strip()
    if "&&" in text and "||" in text:
        raise SpecError(f"condition {expr!r} mixes && and ||")
    joiner, combine = ("||", any) if "||" in text else ("&&", all)
    # Every term is evaluated (no short circuit) so that an unsupported one is refused whatever the data.
    return combine([_atom(part.strip(), result) for part in text.split(joiner)])


def render(template: str, args: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        if m[1] not in args:
            raise SpecError(f"query uses {{{{args.{m[1]}}}}} but no value was given")
        return args[m[1]]

    return _ARG.sub(value, template)


@dataclass(frozen=True)
class Metric:
    template: str
    name: str
    query: str  # with {{args.*}} still in it
    success: str
    failure: str
    interval_s: float
    count: int | None
    failure_limit: int
    inconclusive_limit: int
    defaults: dict[str, str]


@dataclass(frozen=True)
class Step:
    kind: str  # setWeight | pause | analysis
    weight: int = 0
    pause_s: float = 0.0
    templates: tuple[str, ...] = ()


@dataclass
class Canary:
    steps: list[Step]
    background: tuple[str, ...]
    background_start: int
    metrics: dict[str, list[Metric]] = field(default_factory=dict)


def _metrics(doc: dict[str, Any]) -> list[Metric]:
    spec = doc["spec"]
    defaults = {a["name"]: str(a["value"]) for a in spec.get("args", []) if "value" in a}
    out = []
    for m in spec["metrics"]:
        metric = Metric(
            template=doc["metadata"]["name"],
            name=m["name"],
            query=m["provider"]["prometheus"]["query"],
            success=m["successCondition"],
            failure=m["failureCondition"],
            interval_s=seconds(m.get("interval", "1m")),
            count=m.get("count"),
            failure_limit=int(m.get("failureLimit", 0)),
            inconclusive_limit=int(m.get("inconclusiveLimit", 0)),
            defaults=defaults,
        )
        check_condition(metric.success)
        check_condition(metric.failure)
        out.append(metric)
    return out


def load(rollouts: Path = ROLLOUTS) -> Canary:
    """The inference Rollout's canary strategy and every AnalysisTemplate it names, checked for what it needs."""
    rollout = yaml.safe_load((rollouts / "inference-rollout.yaml").read_text())
    canary = rollout["spec"]["strategy"]["canary"]
    steps: list[Step] = []
    for raw in canary["steps"]:
        if "setWeight" in raw:
            steps.append(Step("setWeight", weight=int(raw["setWeight"])))
        elif "pause" in raw:
            if "duration" not in raw["pause"]:
                raise SpecError("an indefinite pause waits for a person; the drill cannot run it")
            steps.append(Step("pause", pause_s=seconds(raw["pause"]["duration"])))
        elif "analysis" in raw:
            steps.append(
                Step("analysis", templates=tuple(t["templateName"] for t in raw["analysis"]["templates"]))
            )
        else:
            raise SpecError(f"canary step {raw!r} is not setWeight, pause or analysis")
    background = canary.get("analysis", {})
    result = Canary(
        steps,
        tuple(t["templateName"] for t in background.get("templates", [])),
        int(background.get("startingStep", 0)),
    )
    for doc in yaml.safe_load_all((rollouts / "analysis-templates.yaml").read_text()):
        if doc and doc.get("kind") == "AnalysisTemplate":
            result.metrics[doc["metadata"]["name"]] = _metrics(doc)
    named = set(result.background) | {t for s in steps for t in s.templates}
    if missing := named - set(result.metrics):
        raise SpecError(
            f"the Rollout names AnalysisTemplates that analysis-templates.yaml lacks: {sorted(missing)}"
        )
    return result
