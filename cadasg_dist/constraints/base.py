"""What every constraint rule does, and how a column's values are read and written for one.

A rule checks a decoded frame (``violated``: one flag per row) and repairs the rows it flags
(``repair``: in place, deterministic). ``fixed`` names the columns a row's cell sets (categorical
context columns and a categorical target): a repair never changes them while another choice exists.
A missing value satisfies every rule, so the modelled missingness is kept as it is.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cadasg_dist.context.labels import Interval

RULES: dict[str, type[Rule]] = {}


class Rule(abc.ABC):
    """One declared constraint, ready to check and repair decoded rows."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RULES[cls.kind] = cls

    @property
    @abc.abstractmethod
    def columns(self) -> tuple[str, ...]:
        """The columns the rule reads."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line naming the rule, for errors and logs (never a row's value)."""

    @abc.abstractmethod
    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        """(N,) bool: the rows that break the rule."""

    @abc.abstractmethod
    def repair(self, frame: pd.DataFrame, fixed: frozenset[str], reference: pd.DataFrame) -> None:
        """Make every row of ``frame`` satisfy the rule, in place; ``reference``: rows of the same draw
        that satisfy every rule (a repair that must pick among values may follow their shares)."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule: ...


def rule_from_dict(d: dict[str, Any]) -> Rule:
    return RULES[d["kind"]].from_dict(d)


# --- a column's values as numbers, and back ------------------------------------------------------

_NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds


def numbers(s: pd.Series, dates: bool = False) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number); datetimes (or, with ``dates``, text
    that parses as dates, as a table read from CSV holds them) as int64 nanoseconds, exact."""
    if dates and not pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = pd.to_datetime(s, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def absent(x: np.ndarray) -> np.ndarray:
    """Which of ``numbers``' values are missing: a missing value satisfies every rule."""
    return x == _NAT if x.dtype == np.int64 else np.isnan(x)


def put(frame: pd.DataFrame, column: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Write ``values`` at positions ``rows`` of ``column``, in the column's own dtype."""
    if rows.size == 0:
        return
    s = frame[column]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        cast: Any = pd.to_datetime(np.asarray(values, dtype=np.int64)).as_unit(s.dt.unit)
    elif pd.api.types.is_bool_dtype(s.dtype):
        cast = np.asarray([bool(v) for v in values], dtype=bool)
    elif pd.api.types.is_integer_dtype(s.dtype):
        cast = np.rint(np.asarray(values, dtype=float)).astype(np.int64)
    elif pd.api.types.is_float_dtype(s.dtype):
        cast = np.asarray(values, dtype=s.dtype.numpy_dtype if hasattr(s.dtype, "numpy_dtype") else s.dtype)
    else:
        cast = np.asarray(values, dtype=object)
    frame.iloc[rows, frame.columns.get_loc(column)] = cast


def label_key(v: Any) -> str | None:
    """A category or label as rules compare it: 1, 1.0, "1" and np.int64(1) are one value; missing is None."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def key_codes(s: pd.Series, vocab: dict[str | None, int]) -> np.ndarray:
    """(N,) each value's index in ``vocab`` (keyed by ``label_key``): -1 outside it, -2 missing.
    Keys are computed once per distinct value, so a column of 100k rows costs one factorize."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    lut = np.array([vocab.get(label_key(u), -1) for u in uniques] + [-2], dtype=np.int64)
    return lut[codes]


# --- the values a column can hold: the closest one inside a bound ---------------------------------

class Grid:
    """The values a column takes: every float of its dtype, the integers, or a finite set (a
    numeric category column). ``inner`` finds the grid value nearest a bound on its inside."""

    def __init__(self, kind: str, dtype: str = "float64", values: tuple[float, ...] = ()) -> None:
        self.kind, self.dtype, self.values = kind, dtype, tuple(sorted(values))

    def inner(self, x: float, upward: bool, strict: bool) -> float:
        """The smallest grid value >= x (> x when strict) when ``upward``, else the largest <= x (< x)."""
        if math.isinf(x):
            return x
        if self.kind == "int":
            if upward:
                return math.floor(x) + 1 if strict else math.ceil(x)
            return math.ceil(x) - 1 if strict else math.floor(x)
        if self.kind == "set":
            inside = [v for v in self.values if (v > x if strict else v >= x)] if upward else \
                [v for v in self.values if (v < x if strict else v <= x)]
            return (inside[0] if upward else inside[-1]) if inside else (math.inf if upward else -math.inf)
        t = np.dtype(self.dtype).type
        v, toward = t(x), t(math.inf if upward else -math.inf)
        while (v < x or (strict and v == x)) if upward else (v > x or (strict and v == x)):
            v = np.nextafter(v, toward)
        return float(v)

    def holds_some(self, interval: Interval) -> bool:
        """Whether some value of the grid lies in ``interval``."""
        if self.kind == "set":
            return bool(interval.contains(np.array(self.values, dtype=float)).any())
        return self.inner(interval.lo, True, not interval.lo_closed) <= self.inner(interval.hi, False,
                                                                                   not interval.hi_closed)

    def clip(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``x`` moved into the closed [lo, hi] (grid values): clipped, or the nearest set value."""
        out = np.clip(x, lo, hi)
        if self.kind == "set":
            inside = np.array([v for v in self.values if lo <= v <= hi], dtype=float)
            j = np.clip(np.searchsorted(inside, out), 1, max(1, len(inside) - 1))
            left, right = inside[j - 1], inside[np.minimum(j, len(inside) - 1)]
            out = np.where(np.abs(out - left) <= np.abs(right - out), left, right)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "dtype": self.dtype, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        return cls(d["kind"], d.get("dtype", "float64"), tuple(d.get("values", ())))


def nudge(x: np.ndarray, grid: Grid, up: bool) -> np.ndarray:
    """The next grid value above (``up``) or below each of ``x``."""
    if grid.kind == "int":
        return x + (1 if up else -1)
    if grid.kind == "set":
        return np.array([grid.inner(v, up, True) for v in x], dtype=float)
    t = np.dtype(grid.dtype).type
    return np.nextafter(x.astype(grid.dtype), t(math.inf if up else -math.inf)).astype(float)
