"""Conditions on any column: which cells to draw from, and which drawn rows to keep.

How each condition is met, cheapest first:

* a **context column** or the **target's class** (or, for a numeric target, its value bin) is a
  cache stratum: the draw is restricted to the matching cells, so every row meets it exactly and
  nothing is rejected (a class merged with others into one stratum also checks the class);
* another **categorical** column (or a derived one, or a missing value) is met exactly by
  rejection: rows are drawn from the model and only those holding the value are kept, which is the
  model's own conditional distribution;
* a **number** is honest about being continuous. ``LO..HI`` (a ``(lo, hi)`` tuple, either end
  ``None``) keeps the drawn rows inside the range. A single value must lie in the column's
  modelled range; an integer column keeps the rows drawn with exactly that value, a continuous or
  date column keeps the rows drawn within half a quantile step of it (the model's resolution) and
  then *pins* the column to the value, so the other columns follow the model near that value.

A condition that too few drawn rows meet is refused with the rate achieved (``loop.py``).
Privacy: conditions read only the model and its cache; nothing here spends budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from cadasg_dist.data.categorical import CategoricalTransform
from cadasg_dist.data.continuous import ContinuousTransform
from cadasg_dist.data.schema import datetime_to_seconds
from cadasg_dist.data.values import CategoryMatcher, is_missing
from cadasg_dist.errors import ContextError, InvalidDataError


@dataclass
class Filter:
    """Keep the rows of a drawn frame whose ``column`` meets the condition; ``pin``: the value a
    kept row's column is then set to (a continuous value met within a window)."""

    column: str
    accept: Any  # frame -> (N,) bool
    pin: Any = None

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        keep = np.asarray(self.accept(frame[self.column]), dtype=bool)
        out = frame[keep]
        if self.pin is not None and len(out):
            out = out.copy()
            out[self.column] = pd.Series(self.pin, index=out.index).astype(frame[self.column].dtype)
        return out


@dataclass
class Plan:
    """The cells to draw from (with their cache counts as weights) and the filters to apply."""

    cells: np.ndarray
    weights: np.ndarray
    filters: list[Filter] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        for f in self.filters:
            frame = f.apply(frame)
        return frame.reset_index(drop=True)


def plan(model: Any, conditions: dict[str, Any] | None, context: dict[str, Any] | None) -> Plan:
    """The draw that meets ``context`` (context columns, as before) and ``conditions`` (any column)."""
    conditions = dict(conditions or {})
    fixed = dict(context or {})
    schema, extractor, dims = model.schema, model.extractor, model.dims
    known = schema.output_names
    for col in conditions:
        if col not in known:
            raise InvalidDataError(f"unknown column {col!r} in the conditions; columns: {', '.join(known)}")
        if col in fixed and not _same(fixed[col], conditions[col]):
            raise InvalidDataError(f"column {col!r} is fixed twice: context {fixed[col]!r}, condition "
                                   f"{conditions[col]!r}; give it once")
    filters: list[Filter] = []
    strata = np.arange(dims.strata)
    ids = extractor.resolve(fixed) if fixed else np.arange(extractor.n_contexts)
    for col, value in conditions.items():
        if col in extractor.columns:
            chosen, more = _context_condition(model, col, value)
            ids = ids if chosen is None else np.intersect1d(ids, chosen)
            filters.extend(more)
        elif col == model.config.target and dims.strata > 1:
            strata, exact = _target_strata(model, value)
            if not exact:
                filters.extend(_column_filters(model, col, value))
        else:
            filters.extend(_column_filters(model, col, value))
    if ids.size == 0:
        raise ContextError(f"no training context matches {conditions}; known: {extractor.known_text()}")
    cells = (ids[:, None] * dims.strata + strata[None, :]).ravel()
    weights = model.sampler.pack.cell_counts[cells]
    if weights.sum() <= 0:
        if len(strata) < dims.strata:
            raise ContextError(f"the model holds no rows of {conditions} in the matching contexts")
        weights = np.ones(len(cells))
    return Plan(cells, weights, filters, {**fixed, **conditions})


def _context_condition(model: Any, col: str, value: Any) -> tuple[np.ndarray | None, list[Filter]]:
    """The contexts a condition on context column ``col`` selects (None: all) and the filters it
    still needs: a banded number also keeps its value (a single value pinned, a range checked)."""
    kind = model.schema[col].kind
    if _is_range(value) and kind in ("continuous", "integer", "datetime"):
        return None, _column_filters(model, col, value)
    values = list(value) if isinstance(value, list | tuple) else [value]
    chosen = np.unique(np.concatenate([model.extractor.resolve({col: v}) for v in values]))
    numeric = kind in ("continuous", "integer") and len(values) == 1 and not is_missing(value)
    if numeric and _parses(value):  # a value inside a band: the band, and the value itself
        return chosen, _column_filters(model, col, value)
    return chosen, []


def _parses(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def _is_range(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2


def _column_filters(model: Any, col: str, value: Any) -> list[Filter]:
    t = model.transformer.transforms.get(col)
    if isinstance(t, ContinuousTransform):
        return [_numeric_filter(t, col, value)]
    if isinstance(t, CategoricalTransform):
        codes = _class_codes(t, col, value)
        cats = np.array([*t.categories, None], dtype=object)[sorted(codes)]
        return [Filter(col, lambda s: _member(s, cats))]
    if col in model.extractor.columns:  # a categorical context column: the cells already meet it
        return []
    derived = next(d for d in model.schema.derived if d.name == col)
    wanted = [value] if not isinstance(value, list | tuple) else list(value)
    keys = {None if is_missing(v) else float(v) for v in wanted}
    return [Filter(derived.name, lambda s: np.array([(None if is_missing(v) else float(v)) in keys
                                                     for v in s.tolist()], dtype=bool))]


def _member(s: pd.Series, cats: np.ndarray) -> np.ndarray:
    values = s.to_numpy(dtype=object)
    keep = np.zeros(len(values), dtype=bool)
    for c in cats:
        keep |= pd.isna(s).to_numpy() if c is None else (values == c)
    return keep


def _class_codes(t: CategoricalTransform, col: str, value: Any) -> set[int]:
    """Codes of the categories ``value`` names (a value, or a list of them; None: missing)."""
    matcher = CategoryMatcher(t.categories)
    codes = set()
    for v in value if isinstance(value, list | tuple) else [value]:
        if is_missing(v):
            if not t.schema.has_missing:
                raise InvalidDataError(f"column {col!r} is never missing in the model; condition on a value")
            codes.add(len(t.categories))
            continue
        code = matcher.index(v)
        if code is None:
            raise InvalidDataError(f"unknown value {v!r} for column {col!r}; valid values: "
                                   f"{', '.join(map(str, t.categories[:30]))}")
        codes.add(code)
    return codes


def _target_strata(model: Any, value: Any) -> tuple[np.ndarray, bool]:
    """The target strata that can hold ``value`` and whether keeping to them meets it exactly."""
    dims, target = model.dims, model.config.target
    t = model.transformer.transforms[target]
    bins, span = dims.target_bins, dims.strata_span
    if isinstance(t, CategoricalTransform):
        codes = _class_codes(t, target, value)
        groups = dims.class_groups or tuple(range(dims.classes))
        chosen = sorted({groups[c] for c in codes})
        exact = all(sum(1 for g in groups if g == grp) == sum(1 for c in codes if groups[c] == grp) for grp in chosen)
        return np.array([g * bins + b for g in chosen for b in range(bins)]), exact
    lo, hi = _numeric_bounds(t, target, value)
    if span is None:
        group_ok = [True]
    elif span.role == "atom":
        group_ok = [not (t.atom is not None and lo == hi == t.atom), t.atom is not None and lo <= t.atom <= hi]
    else:  # the missing indicator
        group_ok = [lo is not None, lo is None]
    edges = np.r_[-np.inf, ndtri(np.arange(1, bins) / bins), np.inf] if bins > 1 else np.array([-np.inf, np.inf])
    values = t.decode(np.clip(edges, -8, 8)) if lo is not None else None
    out = []
    for g, ok in enumerate(group_ok):
        on_atom = span is not None and span.role == "atom" and g == 1  # the atom's rows: any bin
        out.extend(g * bins + b for b in range(bins) if ok and (
            lo is None or on_atom or (values[b] <= hi and values[b + 1] >= lo)))
    if not out:
        raise InvalidDataError(f"no stratum of target {target!r} can hold {value!r}")
    return np.array(out), False


def _numeric_bounds(t: ContinuousTransform, col: str, value: Any) -> tuple[float | None, float | None]:
    """[lo, hi] a numeric condition asks for (a value: lo == hi; None, None: missing), checked
    against the modelled range."""
    if is_missing(value):
        if not t.schema.has_missing:
            raise InvalidDataError(f"column {col!r} is never missing in the model; condition on a value or range")
        return None, None
    lo_v, hi_v = value if _is_range(value) else (value, value)
    lo = -np.inf if lo_v is None else _number(t, col, lo_v)
    hi = np.inf if hi_v is None else _number(t, col, hi_v)
    smin, smax = t.schema.min, t.schema.max
    if lo > hi:
        raise InvalidDataError(f"condition on {col!r}: the range {lo_v}..{hi_v} is empty; give LO..HI with LO <= HI")
    if hi < smin or lo > smax:
        raise InvalidDataError(f"condition {col}={_text(value)} is outside the modelled range [{smin:g}, {smax:g}] "
                               f"of column {col!r}")
    return lo, hi


def _number(t: ContinuousTransform, col: str, v: Any) -> float:
    try:
        if t.schema.kind == "datetime":
            return float(datetime_to_seconds(pd.Series([v]))[0])
        return float(v)
    except (TypeError, ValueError):
        raise InvalidDataError(f"column {col!r} is numeric: condition it on a number or a range LO..HI, "
                               f"got {v!r}") from None


def _text(value: Any) -> str:
    return f"{value[0]}..{value[1]}" if _is_range(value) else str(value)


def _numeric_filter(t: ContinuousTransform, col: str, value: Any) -> Filter:
    lo, hi = _numeric_bounds(t, col, value)
    as_number = (lambda s: datetime_to_seconds(s)) if t.schema.kind == "datetime" else (
        lambda s: s.to_numpy(dtype=float, na_value=np.nan))
    if lo is None:
        return Filter(col, lambda s: s.isna().to_numpy())
    if lo < hi or _is_range(value):
        return Filter(col, lambda s: (lambda x: (x >= lo) & (x <= hi))(as_number(s)))
    if t.schema.kind == "integer" and not float(lo).is_integer():
        raise InvalidDataError(f"column {col!r} holds integers: condition it on an integer or a range, got {value!r}")
    pin = pd.Timestamp(lo * 1e9) if t.schema.kind == "datetime" else lo
    if t.schema.kind == "integer" or (t.atom is not None and lo == t.atom):
        return Filter(col, lambda s: as_number(s) == lo)
    cdf, half = _cdf(t)
    at = cdf(np.array([lo]))[0]
    return Filter(col, lambda s: (lambda x: (x == lo) | (np.abs(cdf(x) - at) <= half))(as_number(s)), pin=pin)


def _cdf(t: ContinuousTransform) -> tuple[Any, float]:
    """The column's modelled CDF and half of one quantile step (the window a value is met in)."""
    half = 0.5 / max(t.n_quantiles - 1, 1)
    if t.encoding == "standard" or t.quantiles is None:
        return (lambda x: ndtr((x - t.mean) / t.std)), half
    levels = np.linspace(0.0, 1.0, len(t.quantiles))
    return (lambda x: np.interp(x, t.quantiles, levels)), half
