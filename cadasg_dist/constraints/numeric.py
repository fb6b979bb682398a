"""Rules on numeric columns: a range, an inequality between two columns, a band tied to its label.

Repairs (used only for rows that bounded redraws did not fix):

* ``Range``: clip into [low, high]; an open end moves to the nearest value inside (the next integer
  of an integer column, the next float of the column's dtype, the nearest category of a numeric
  category column).
* ``Inequality`` (``a + offset <= b``, or ``<``): sort the pair, ``a, b = b - offset, a + offset``, then
  step ``b`` up the column's grid while the rule still fails (equal values under ``strict``, rounding).
* ``Band``: clip the column into the interval its row's label names, as ``Range`` does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.constraints.base import Grid, Rule, absent, key_codes, label_key, nudge, numbers, put
from cadasg_dist.context.labels import Interval


def _fmt(x: float) -> str:
    return f"{x:g}"


class Range(Rule):
    """``low <= column <= high`` (``inclusive`` as pandas' between: both, neither, left, right)."""

    kind = "range"

    def __init__(self, column: str, low: float | None, high: float | None, inclusive: str, grid: Grid) -> None:
        self.column, self.grid, self.inclusive = column, grid, inclusive
        lo = -math.inf if low is None else float(low)
        hi = math.inf if high is None else float(high)
        self.interval = Interval(lo, hi, inclusive in ("both", "left") and lo > -math.inf,
                                 inclusive in ("both", "right") and hi < math.inf)

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def describe(self) -> str:
        return f"range {self.column} in {self.interval.text()}"

    def bounds(self) -> tuple[float, float]:
        """The closed grid bounds equivalent to the interval."""
        iv = self.interval
        return self.grid.inner(iv.lo, True, not iv.lo_closed), self.grid.inner(iv.hi, False, not iv.hi_closed)

    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        x = numbers(frame[self.column])
        return ~self.interval.contains(x) & ~absent(x)

    def repair(self, frame: pd.DataFrame, fixed: frozenset[str], reference: pd.DataFrame) -> None:
        rows = np.flatnonzero(self.violated(frame))
        x = numbers(frame[self.column])[rows]
        put(frame, self.column, rows, self.grid.clip(x, *self.bounds()))

    def to_dict(self) -> dict[str, Any]:
        iv = self.interval
        return {"kind": self.kind, "column": self.column, "low": None if math.isinf(iv.lo) else iv.lo,
                "high": None if math.isinf(iv.hi) else iv.hi, "inclusive": self.inclusive, "grid": self.grid.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Range:
        return cls(d["column"], d["low"], d["high"], d["inclusive"], Grid.from_dict(d["grid"]))


class Inequality(Rule):
    """``a + offset <= b`` (``<`` when strict); for datetime columns the offset is in seconds."""

    kind = "inequality"

    def __init__(self, a: str, b: str, strict: bool, offset: float, grid_a: Grid, grid_b: Grid,
                 datetime: bool = False) -> None:
        self.a, self.b, self.strict, self.offset = a, b, bool(strict), float(offset)
        self.grid_a, self.grid_b, self.datetime = grid_a, grid_b, datetime

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def describe(self) -> str:
        shift = f" + {_fmt(self.offset)}{'s' if self.datetime else ''}" if self.offset else ""
        return f"inequality {self.a}{shift} {'<' if self.strict else '<='} {self.b}"

    def _shift(self) -> float | int:
        return int(round(self.offset * 1e9)) if self.datetime else self.offset

    def _fails(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        left = a + self._shift()
        return ~(left < b) if self.strict else ~(left <= b)

    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        a, b = numbers(frame[self.a], self.datetime), numbers(frame[self.b], self.datetime)
        return self._fails(a, b) & ~absent(a) & ~absent(b)

    def repair(self, frame: pd.DataFrame, fixed: frozenset[str], reference: pd.DataFrame) -> None:
        rows = np.flatnonzero(self.violated(frame))
        if rows.size == 0:
            return
        a, b = numbers(frame[self.a], self.datetime)[rows], numbers(frame[self.b], self.datetime)[rows]
        shift = self._shift()
        new_a, new_b = b - shift, a + shift  # the pair sorted: each keeps the other's place
        if self.grid_a.kind == "int" and not self.datetime:  # datetimes: exact int64 nanoseconds already
            new_a = np.floor(new_a)
        if self.grid_b.kind == "int" and not self.datetime:
            new_b = np.ceil(new_b)
        new_a = _on_grid(new_a, self.grid_a, up=False)
        new_b = _on_grid(new_b, self.grid_b, up=True)
        for _ in range(64):  # equal values under strict, float rounding: step b up its grid
            still = self._fails(new_a, new_b)
            if not still.any():
                break
            new_b = np.where(still, nudge(new_b, self.grid_b, up=True), new_b)
        if self.datetime:
            new_a, new_b = new_a.astype(np.int64), new_b.astype(np.int64)
        put(frame, self.a, rows, new_a)
        put(frame, self.b, rows, new_b)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "a": self.a, "b": self.b, "strict": self.strict, "offset": self.offset,
                "grid_a": self.grid_a.to_dict(), "grid_b": self.grid_b.to_dict(), "datetime": self.datetime}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inequality:
        return cls(d["a"], d["b"], d["strict"], d["offset"], Grid.from_dict(d["grid_a"]), Grid.from_dict(d["grid_b"]),
                   bool(d.get("datetime", False)))


def _on_grid(x: np.ndarray, grid: Grid, up: bool) -> np.ndarray:
    """``x`` as the column stores it: rounded to its float dtype, or to its nearest category on the
    safe side (``up``: at or above, else at or below)."""
    if grid.kind == "float":
        return x.astype(grid.dtype).astype(float)
    if grid.kind == "set":
        return np.array([grid.inner(v, up, False) for v in x], dtype=float)
    return x


class Band(Rule):
    """``column`` lies in the interval named by the row's ``context`` label (its band)."""

    kind = "band"

    def __init__(self, column: str, context: str, bands: dict[str, Interval], grid: Grid) -> None:
        self.column, self.context, self.bands, self.grid = column, context, dict(bands), grid

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.context)

    def describe(self) -> str:
        return f"band {self.column} within the band its {self.context} label names"

    def _intervals(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[Interval]]:
        """Each row's band as an index into the returned intervals (negative: no band, unconstrained)."""
        labels = list(self.bands)
        which = key_codes(frame[self.context], {lab: i for i, lab in enumerate(labels)})
        return which, [self.bands[lab] for lab in labels]

    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        which, intervals = self._intervals(frame)
        x = numbers(frame[self.column])
        bad = np.zeros(len(frame), dtype=bool)
        for i, iv in enumerate(intervals):
            rows = which == i
            bad[rows] = ~iv.contains(x[rows])
        return bad & ~absent(x)

    def repair(self, frame: pd.DataFrame, fixed: frozenset[str], reference: pd.DataFrame) -> None:
        bad = self.violated(frame)
        which, intervals = self._intervals(frame)
        x = numbers(frame[self.column])
        for i, iv in enumerate(intervals):
            rows = np.flatnonzero(bad & (which == i))
            lo, hi = self.grid.inner(iv.lo, True, not iv.lo_closed), self.grid.inner(iv.hi, False, not iv.hi_closed)
            put(frame, self.column, rows, self.grid.clip(x[rows], lo, hi))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "context": self.context, "grid": self.grid.to_dict(),
                "bands": {lab: [_plain(iv.lo), _plain(iv.hi), iv.lo_closed, iv.hi_closed]
                          for lab, iv in self.bands.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Band:
        bands = {lab: Interval(float(v[0]), float(v[1]), bool(v[2]), bool(v[3])) for lab, v in d["bands"].items()}
        return cls(d["column"], d["context"], bands, Grid.from_dict(d["grid"]))


__all__ = ["Band", "Inequality", "Range", "label_key"]


def _plain(x: float) -> float | str:
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else x

