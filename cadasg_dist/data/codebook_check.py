"""A codebook held against a table: every problem at once (``check``), and the warnings of a
draft (``draft_warnings``).

Privacy: both read the real rows; they are tools for the data owner, not part of a release. With
``private=True`` a problem names a column and a count or share, never a value of the table (a
value outside a declared set may be one person's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.data.codebook_entry import CodebookColumn, yaml_scalar
from cadasg_dist.data.schema import datetime_to_seconds
from cadasg_dist.data.values import CategoryMatcher, declared_categories
from cadasg_dist.errors import InvalidDataError

NUMERIC_KINDS = ("continuous", "integer", "datetime")
# A context should leave this many rows to each of its levels (and each combination of levels):
# fewer, and a private run's noise is most of what a context's cache and marginals hold.
MIN_ROWS_PER_CONTEXT = 50
# A text column is "numeric with a few text values" when at least this share of its values are numbers.
NUMERIC_SHARE = 0.9


@dataclass(frozen=True)
class Problem:
    """One disagreement between a codebook and a table. ``column`` is None for the table as a whole."""

    column: str | None
    code: str  # undeclared | not_in_data | no_categories | categories | outside_categories | non_numeric
    #            | fractional | outside_bounds | derived
    message: str

    def __str__(self) -> str:
        return self.message if self.column is None else f"{self.column}: {self.message}"


def check(columns: tuple[CodebookColumn, ...], df: pd.DataFrame, *, private: bool = False) -> list[Problem]:
    """Every problem of ``columns`` against ``df``, in the table's column order then the codebook's."""
    declared = {c.name: c for c in columns}
    problems = []
    for name in map(str, df.columns):
        col = declared.get(name)
        if col is None:
            problems.append(Problem(name, "undeclared", "in the data but not in the codebook: declare it "
                                    "(kind: identifier to drop it)"))
        else:
            problems.extend(_check_column(col, df[name], declared, private))
    names = set(map(str, df.columns))
    problems.extend(Problem(c.name, "not_in_data", "in the codebook but not in the data") for c in columns
                    if c.name not in names)
    return problems


def _check_column(col: CodebookColumn, s: pd.Series, declared: dict[str, CodebookColumn],
                  private: bool) -> list[Problem]:
    name = col.name
    if col.kind in ("categorical", "boolean"):
        return _check_categories(col, s, private)
    if col.kind in NUMERIC_KINDS:
        return _check_numbers(col, s, private)
    if col.kind == "derived":
        source = declared.get(str(col.of))
        if source is None or source.kind in ("identifier", "derived") or col.of == name:
            return [Problem(name, "derived", f"derived from {col.of!r}, not a modelled column of the codebook")]
        if source.categories is not None and CategoryMatcher(source.categories).index(col.equals) is None:
            return [Problem(name, "derived", f"equals {col.equals!r}, not a category of {col.of!r}")]
    return []


def _check_categories(col: CodebookColumn, s: pd.Series, private: bool) -> list[Problem]:
    name = col.name
    if col.categories is None:
        if col.kind == "categorical" and not pd.api.types.is_numeric_dtype(s.dtype):
            return [Problem(name, "no_categories", "a text column with no category set: a private run needs one "
                            "(categories: [...])")]
        if col.kind == "categorical":
            return []
    try:
        cats = declared_categories(col.categories or (False, True), s, col.kind, name)
    except InvalidDataError as exc:
        return [Problem(name, "categories", str(exc).removeprefix(f"column {name!r} "))]
    outside = CategoryMatcher(cats).outside(s)
    if not outside.any():
        return []
    text = f"{_rows(int(outside.sum()))} values outside its category set"
    if not private:
        examples = list(dict.fromkeys(s[outside].tolist()))[:5]
        text += f" (such as {', '.join(yaml_scalar(_plain(v)) for v in examples)})"
    return [Problem(name, "outside_categories", text + ": add them to its categories, or clean the data")]


def _check_numbers(col: CodebookColumn, s: pd.Series, private: bool) -> list[Problem]:
    name, out = col.name, []
    x, bad = numbers(s, col.kind)
    if bad.any():
        what = "dates" if col.kind == "datetime" else "numbers"
        text = f"{_rows(int(bad.sum()))} values that are not {what}"
        if not private:
            examples = list(dict.fromkeys(s[bad].astype(str).tolist()))[:5]
            text += f" (such as {', '.join(yaml_scalar(v) for v in examples)})"
        out.append(Problem(name, "non_numeric", text + ": make them missing in the data, or declare another kind"))
    present = x[~np.isnan(x)]
    if col.kind == "integer" and present.size and (fractional := int(np.sum(np.mod(present, 1) != 0))):
        out.append(Problem(name, "fractional", f"{_rows(fractional)} fractional values, which an integer "
                           "column rounds: declare kind: continuous, or fix the data"))
    override = col.override()
    below = int(np.sum(present < override.min)) if override.min is not None else 0
    above = int(np.sum(present > override.max)) if override.max is not None else 0
    if below or above:
        share = (below + above) / max(len(s), 1)
        out.append(Problem(name, "outside_bounds", f"{_rows(below + above, 'lie')} ({share:.1%} of the table) outside "
                           f"[{_bound_text(col.min, '-inf')}, {_bound_text(col.max, 'inf')}] and would be clipped "
                           f"({below} below, {above} above): widen the bounds if the documentation allows"))
    return out


def numbers(s: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as floats with NaN where missing or unreadable, the present values that are unreadable)."""
    missing = s.isna().to_numpy()
    if kind == "datetime":
        present = s[~missing]
        x = np.full(len(s), np.nan)
        if len(present):
            x[~missing] = datetime_to_seconds(present)
    else:
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return x, np.isnan(x) & ~missing


def mostly_numbers(present: pd.Series) -> bool:
    """A text column whose values are numbers but for a few (NUMERIC_SHARE): "n/a", ".", "unknown"."""
    text = pd.api.types.is_object_dtype(present.dtype) or pd.api.types.is_string_dtype(present.dtype)
    if not text or present.empty:
        return False
    if any(isinstance(v, bool) for v in present.head(1000).tolist()):
        return False
    parsed = pd.to_numeric(present, errors="coerce")
    return bool(parsed.notna().mean() >= NUMERIC_SHARE and parsed.notna().any())


def draft_warnings(columns: tuple[CodebookColumn, ...], df: pd.DataFrame, *, target: str | None = None,
                   context: tuple[str, ...] = ()) -> list[str]:
    """What the owner should look at before confirming a draft: identifier-like columns, numeric
    columns with a few text values, and context columns with more levels than the rows support."""
    by_name = {c.name: c for c in columns}
    for name in (target, *context):
        if name is not None and name not in by_name:
            raise InvalidDataError(f"unknown column {name!r}; columns: {', '.join(map(str, df.columns))}")
    out = []
    for c in columns:
        if c.kind == "identifier":
            out.append(f"{c.name}: looks like an identifier ({c.identifier}); marked identifier (dropped): "
                       "give it another kind if it is a feature")
        elif c.kind in NUMERIC_KINDS and mostly_numbers(df[c.name].dropna()):
            bad = int(numbers(df[c.name], c.kind)[1].sum())
            out.append(f"{c.name}: numbers but for {bad} text values; marked {c.kind}: make those missing in "
                       "the data before training")
    if target is not None and by_name[target].kind == "identifier":
        out.append(f"{target}: the target looks like an identifier; declare its kind")
    out.extend(_context_warnings([by_name[n] for n in context], len(df)))
    return out


def _context_warnings(columns: list[CodebookColumn], n_rows: int) -> list[str]:
    out, combos = [], 1
    for c in columns:
        if c.kind in ("continuous", "integer", "datetime"):
            out.append(f"{c.name}: a numeric context column needs bands (context.bands.{c.name}: [edges]) "
                       "or periods for dates (context.periods)")
            continue
        levels = len(c.categories or ()) or 2
        combos *= levels
        if n_rows / levels < MIN_ROWS_PER_CONTEXT:
            out.append(f"{c.name}: {levels} levels for {n_rows} rows (about {n_rows / levels:.0f} each): a context "
                       f"needs some {MIN_ROWS_PER_CONTEXT} rows or more; merge levels or pick another context")
    if len(columns) > 1 and combos > 1 and n_rows / combos < MIN_ROWS_PER_CONTEXT:
        out.append(f"{', '.join(c.name for c in columns)}: {combos} contexts for {n_rows} rows (about "
                   f"{n_rows / combos:.0f} each): fewer or coarser context columns would leave each "
                   f"{MIN_ROWS_PER_CONTEXT} rows or more")
    return out


def _rows(n: int, verb: str = "hold") -> str:
    """"1 row holds", "3 rows hold"."""
    return f"1 row {verb}s" if n == 1 else f"{n} rows {verb}"


def _bound_text(v: Any, default: str) -> str:
    return default if v is None else (v if isinstance(v, str) else f"{v:g}")


def _plain(v: Any) -> Any:
    """A table's value as ``yaml_scalar`` spells it (numpy scalars as Python ones, others as text)."""
    if isinstance(v, np.generic):
        v = v.item()
    return v if isinstance(v, bool | int | float | str) else str(v)
