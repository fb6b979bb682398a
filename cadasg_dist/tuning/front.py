"""Pareto fronts and the ``--pick`` rule: pure functions of plain numbers, no Ray.

A trial is a point of objective values, e.g. ``{"fidelity": 0.81, "utility": 0.93, "epsilon": 3.0}``;
``OBJECTIVES`` says which way each one is better. The front is the set of points that no other
point dominates (at least as good on every objective and strictly better on one).

``parse_pick("utility@epsilon<=3")`` reads a selection rule: maximise (or minimise) one objective
among the points that meet every constraint. Ties go to the point that is better on the other
objectives in ``OBJECTIVES`` order, then to the smaller trial id, so a pick is deterministic.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cadasg_dist.errors import CADASGError

# Objective -> "max" or "min". The validation metrics (fidelity score, utility ratio) read real rows;
# epsilon is the trial's spent privacy budget.
OBJECTIVES: dict[str, str] = {"utility": "max", "fidelity": "max", "epsilon": "min"}
ALIASES = {"eps": "epsilon", "ε": "epsilon", "util": "utility", "fid": "fidelity"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "=": operator.eq, "==": operator.eq}
_CONSTRAINT = re.compile(r"^\s*([^\s<>=]+)\s*(<=|>=|==|<|>|=)\s*([^\s<>=]+)\s*$")


class PickError(CADASGError):
    """A ``--pick`` rule is malformed, or no trial meets its constraints."""


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial: its id and its objective values (None = not measured)."""

    trial_id: str
    values: Mapping[str, float | None]


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def holds(self, point: TrialPoint) -> bool:
        value = point.values.get(self.metric)
        return value is not None and not math.isnan(value) and _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


@dataclass(frozen=True)
class PickRule:
    """Best ``objective`` among the points that meet every constraint."""

    objective: str
    constraints: tuple[Constraint, ...] = ()

    def __str__(self) -> str:
        return self.objective + ("@" + ",".join(map(str, self.constraints)) if self.constraints else "")


def _oriented(value: float | None, direction: str) -> float:
    """Larger is better; a missing value is the worst possible."""
    if value is None or math.isnan(value):
        return -math.inf
    return value if direction == "max" else -value


def dominates(a: Mapping[str, float | None], b: Mapping[str, float | None], directions: Mapping[str, str]) -> bool:
    """True when ``a`` is at least as good as ``b`` on every objective and strictly better on one."""
    pairs = [(_oriented(a.get(k), d), _oriented(b.get(k), d)) for k, d in directions.items()]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(points: Sequence[TrialPoint], directions: Mapping[str, str] | None = None) -> list[TrialPoint]:
    """The points no other point dominates, in input order (duplicates of a front point stay)."""
    directions = directions or OBJECTIVES
    return [p for p in points if not any(dominates(q.values, p.values, directions) for q in points if q is not p)]


def _metric(name: str, where: str) -> str:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in OBJECTIVES:
        raise PickError(f"unknown metric {name!r} in {where!r}; use one of {', '.join(OBJECTIVES)}")
    return key


def parse_pick(text: str) -> PickRule:
    """``"utility@epsilon<=3"``, ``"fidelity@utility>=0.9,epsilon<=8"`` or ``"epsilon"`` -> ``PickRule``."""
    if not isinstance(text, str) or not text.strip():
        raise PickError('--pick needs a rule like "utility@epsilon<=3" (objective[@metric<=value,...])')
    head, at, tail = text.partition("@")
    objective = _metric(head, text)
    constraints = []
    for part in (p for p in tail.split(",") if p.strip()):
        match = _CONSTRAINT.match(part)
        if match is None:
            raise PickError(f"cannot read constraint {part.strip()!r} in {text!r}; write it like epsilon<=3")
        name, op, raw = match.groups()
        try:
            bound = float(raw)
        except ValueError:
            raise PickError(f"constraint {part.strip()!r} in {text!r} needs a number, got {raw!r}") from None
        constraints.append(Constraint(_metric(name, text), "==" if op == "=" else op, bound))
    if at and not constraints:
        raise PickError(f"{text!r} has an '@' but no constraint after it; write e.g. utility@epsilon<=3")
    return PickRule(objective, tuple(constraints))


def select(points: Sequence[TrialPoint], rule: PickRule, directions: Mapping[str, str] | None = None) -> TrialPoint:
    """The point ``rule`` picks; raises ``PickError`` when no point meets its constraints."""
    directions = dict(directions or OBJECTIVES)
    if rule.objective not in directions:
        raise PickError(f"this search has no {rule.objective!r} objective (it has {', '.join(directions)})")
    eligible = [p for p in points if all(c.holds(p) for c in rule.constraints)]
    if not eligible:
        ranges = "; ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in _ranges(points, directions).items())
        raise PickError(f"no trial meets {rule}: the candidates have {ranges or 'no measured values'}")
    order = [rule.objective] + [k for k in directions if k != rule.objective]

    def key(p: TrialPoint) -> tuple:
        return (*(-_oriented(p.values.get(k), directions[k]) for k in order), p.trial_id)

    return min(eligible, key=key)


def _ranges(points: Sequence[TrialPoint], directions: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    out = {}
    for k in directions:
        vals = [v for p in points if (v := p.values.get(k)) is not None and not math.isnan(v)]
        if vals:
            out[k] = (min(vals), max(vals))
    return out
