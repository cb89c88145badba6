"""AnalysisTemplate conditions (Argo's expr language), the subset the templates use, evaluated without ``eval``.

Argo evaluates ``successCondition`` / ``failureCondition`` with github.com/expr-lang/expr over ``result``, the
Prometheus vector's values (argo-rollouts metricproviders/prometheus/prometheus.go processResponse; utils/evaluate/
evaluate.go EvalCondition). Understood here: ``len(result) OP N``, ``result[I] OP N``, ``isNaN(result[I])``, joined
by ``&&`` or ``||`` (no mixing, no parentheses). Anything else is refused when the template is read, with the
offending text: a template the rehearsal cannot read must not pass. As in expr, ``&&``/``||`` short-circuit and an
index past the end of ``result`` is an evaluation error, which Argo turns into an Error measurement
(evaluate.go EvaluateResult returns AnalysisPhaseError with the error).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_OP = r"(<=|>=|==|!=|<|>)"
_LEN = re.compile(rf"^len\(result\)\s*{_OP}\s*({_NUM})$")
_ITEM = re.compile(rf"^result\[(\d+)\]\s*{_OP}\s*({_NUM})$")
_NAN = re.compile(r"^isNaN\(result\[(\d+)\]\)$")


class ConditionError(ValueError):
    """A condition outside the understood subset (raised when a template is read, before anything runs)."""


class EvaluationError(RuntimeError):
    """The condition failed on this result (an index past its end): Argo records the measurement as Error."""


@dataclass(frozen=True)
class _Term:
    kind: str  # len | item | nan
    op: str = "=="
    index: int = 0
    value: float = 0.0

    def __call__(self, result: list[float]) -> bool:
        if self.kind == "len":
            return _OPS[self.op](float(len(result)), self.value)
        if self.index >= len(result):
            raise EvaluationError(f"index out of range: {self.index} (array length {len(result)})")
        if self.kind == "nan":
            return math.isnan(result[self.index])
        return _OPS[self.op](result[self.index], self.value)


def _term(text: str) -> _Term:
    if m := _LEN.match(text):
        return _Term("len", m[1], value=float(m[2]))
    if m := _ITEM.match(text):
        return _Term("item", m[2], int(m[1]), float(m[3]))
    if m := _NAN.match(text):
        return _Term("nan", index=int(m[1]))
    raise ConditionError(f"condition term {text!r} is outside the supported subset")


@dataclass(frozen=True)
class Condition:
    """One parsed condition: its text, its terms and whether they are and-ed or or-ed."""

    text: str
    terms: tuple[_Term, ...]
    any_of: bool

    def __call__(self, result: list[float]) -> bool:
        """Short-circuit like expr: ``len(result) > 0 && result[0] < 1`` never indexes an empty result."""
        for term in self.terms:
            if term(result) == self.any_of:
                return self.any_of
        return not self.any_of


def parse(expr: str) -> Condition:
    """Parse ``expr`` or raise ConditionError naming what is not understood."""
    text = expr.strip()
    if "&&" in text and "||" in text:
        raise ConditionError(f"condition {expr!r} mixes && and ||")
    any_of = "||" in text
    parts = text.split("||" if any_of else "&&")
    return Condition(text, tuple(_term(p.strip()) for p in parts), any_of)
