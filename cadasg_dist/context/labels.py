"""Band labels read as intervals, whatever their spelling.

A band label names an interval of a numeric column. The context extractor writes its bands as
``"[40, 55)"``; users type them as ``"[40,55)"``, ``"[40, 55["``, ``"40-54"``, ``"<40"`` or
``"65+"``, and a user-supplied band column (an ``age_band`` next to ``age``) holds labels of any of
these shapes. ``parse_interval`` reads each of them into one ``Interval``, so a label is matched by
the interval it names rather than by its characters.

Spellings read (numbers may be signed, decimal, ``inf`` or ``∞``; spaces are free):

* brackets: ``[a, b)``, ``(a, b]``, ``[a, b]``, ``(a, b)``, and ISO's reversed ``]a, b[`` / ``[a, b[``;
* a range ``a-b``, ``a–b``, ``a to b`` or ``a..b``: both ends included, as in ``"40-54"``;
* one-sided: ``<a``, ``<=a`` (``≤a``), ``>a``, ``>=a`` (``≥a``) and ``a+`` (``a`` or more).

Privacy: a label is public metadata (a declared band or a released context label), so reading it
reads nothing of the rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf(?:inity)?|∞)"
_BRACKETS = re.compile(rf"^([\[(\]])\s*({_NUM})\s*[,;]\s*({_NUM})\s*([\])\[])$", re.IGNORECASE)
_RANGE = re.compile(rf"^({_NUM})\s*(?:-|–|—|\.\.|to)\s*({_NUM})$", re.IGNORECASE)
_SIDED = re.compile(rf"^(<=|≤|=<|<|>=|≥|=>|>)\s*({_NUM})$", re.IGNORECASE)
_PLUS = re.compile(rf"^({_NUM})\s*\+$", re.IGNORECASE)


@dataclass(frozen=True)
class Interval:
    """The interval ``lo..hi``; ``lo_closed`` / ``hi_closed``: whether the end itself is inside."""

    lo: float
    hi: float
    lo_closed: bool = True
    hi_closed: bool = False

    def contains(self, x: np.ndarray) -> np.ndarray:
        """Elementwise membership of ``x`` (NaN is in no interval)."""
        x = np.asarray(x, dtype=float)
        above = x >= self.lo if self.lo_closed else x > self.lo
        below = x <= self.hi if self.hi_closed else x < self.hi
        return above & below

    @property
    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_closed and self.hi_closed))

    def text(self) -> str:
        """The canonical spelling, ``"[40, 55)"``, as the extractor writes its bands."""
        return f"{'[' if self.lo_closed else '('}{_fmt(self.lo)}, {_fmt(self.hi)}{']' if self.hi_closed else ')'}"

    @classmethod
    def from_pair(cls, pair: Any, inclusive: str = "left") -> Interval:
        """``[lo, hi]`` from config with pandas' ``inclusive`` ("both", "neither", "left", "right")."""
        lo, hi = (float(v) for v in pair)
        return cls(lo, hi, inclusive in ("both", "left"), inclusive in ("both", "right"))


def parse_interval(label: Any) -> Interval | None:
    """The interval a label names, or None when it does not look like one."""
    if not isinstance(label, str):
        return None
    text = " ".join(label.split())
    if m := _BRACKETS.match(text):
        lo, hi = _num(m.group(2)), _num(m.group(3))
        return Interval(lo, hi, m.group(1) == "[" and math.isfinite(lo), m.group(4) == "]" and math.isfinite(hi))
    if m := _RANGE.match(text):
        return Interval(_num(m.group(1)), _num(m.group(2)), True, True)
    if m := _SIDED.match(text):
        op, x = m.group(1), _num(m.group(2))
        if op.startswith("<") or op == "≤" or op == "=<":
            return Interval(-math.inf, x, False, op != "<")
        return Interval(x, math.inf, op != ">", False)
    if m := _PLUS.match(text):
        return Interval(_num(m.group(1)), math.inf, True, False)
    return None


def same_bounds(label: Any, value: Any) -> bool:
    """Whether ``value`` spells the band ``label`` names, brackets aside: the extractor's bands are
    all ``[a, b)``, so their bounds alone tell them apart (``"[40,55)"``, ``"[40, 55["`` and
    ``"40-55"`` all name ``"[40, 55)"``)."""
    a, b = parse_interval(label), parse_interval(value)
    return a is not None and b is not None and (a.lo, a.hi) == (b.lo, b.hi)


def same_interval(label: Any, value: Any) -> bool:
    """Whether two labels name the same interval, ends included (spelling and spaces aside)."""
    a, b = parse_interval(label), parse_interval(value)
    return a is not None and a == b


def _num(text: str) -> float:
    t = text.lower().lstrip("+")
    if t.lstrip("-") in ("inf", "infinity", "∞"):
        return -math.inf if t.startswith("-") else math.inf
    return float(t)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


__all__ = ["Interval", "parse_interval", "same_bounds", "same_interval"]
