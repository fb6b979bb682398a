"""How a value is compared with a category set, whatever its spelling.

A category set is declared in YAML (a config or a codebook) and the config layer hands it over as
text, while the column holds typed values: a pandas bool column holds ``False``, a CSV column of
codes ``1``, a boolean column with gaps Python ``True`` in an object column. ``declared_categories``
puts a declared set into the column's own type (chosen from its storage dtype and declared kind,
public metadata: no value is read), and ``CategoryMatcher`` finds a value's category by value:
first exactly (``category_key``), then by spelling (``spelling_key``: ``"True"`` is ``True``,
``"2"`` is ``2``), so ``[false, true]``, ``["False", "True"]`` and ``[0, 1]`` all describe a bool
column.

Privacy: nothing here reads a statistic of a column; a value outside a set is reported by the
caller as a count or, in a private run, made missing without a word (``private.columns``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.errors import InvalidDataError

_TRUE = ("true", "yes")
_FALSE = ("false", "no")


def category_key(v: Any) -> Any:
    """``v`` as a category look-up key: numpy scalars as Python ones, whole floats as ints."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def spelling_key(v: Any) -> Any:
    """``category_key``, and a string that spells a boolean (``"True"``, ``"false"``) or a number
    exactly as Python writes it (``"2"``, ``"2.5"``, not ``"010"`` or ``"1e5"``) as that value."""
    v = category_key(v)
    if not isinstance(v, str):
        return v
    word = v.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if v[:1].isdigit() or v[:1] in "+-.":
        try:
            x = float(v)
        except ValueError:
            return v
        if math.isfinite(x) and str(category_key(x)) == v:
            return category_key(x)
    return v


def is_missing(v: Any) -> bool:
    """A missing cell as pandas hands it over: None, NaN, NA or NaT."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


class CategoryMatcher:
    """The index of a value in ``categories``, by value (exact key, then spelling), or None."""

    def __init__(self, categories: tuple[Any, ...] | list[Any]) -> None:
        self.categories = tuple(categories)
        self._exact: dict[Any, int] = {}
        self._spelled: dict[Any, int] = {}
        for i, c in enumerate(self.categories):
            self._exact.setdefault(category_key(c), i)
            self._spelled.setdefault(spelling_key(c), i)

    def index(self, v: Any) -> int | None:
        code = self._exact.get(category_key(v))
        return code if code is not None else self._spelled.get(spelling_key(v))

    def outside(self, s: pd.Series) -> np.ndarray:
        """(N,) bool: the present values of ``s`` that match no category."""
        return np.array([not is_missing(v) and self.index(v) is None for v in s.tolist()], dtype=bool)

    def conform(self, s: pd.Series) -> pd.Series:
        """``s`` with every value spelled as its category, and a value outside the set missing."""
        values = [None if is_missing(v) or (i := self.index(v)) is None else self.categories[i] for v in s.tolist()]
        return pd.Series(values, index=s.index, name=s.name, dtype=object)


def declared_categories(declared: tuple[Any, ...] | list[Any], s: pd.Series, kind: str | None,
                        name: str) -> tuple[Any, ...]:
    """A declared category set in the type of column ``s`` (from its storage dtype and declared
    ``kind`` only): booleans for a boolean column or a set spelled wholly in booleans, numbers for
    a numeric column, otherwise the values as declared (numpy scalars as Python ones).

    Raises ``InvalidDataError`` for an empty set, a value the column's type cannot hold, or two
    spellings of one value."""
    if len(declared) == 0:
        raise InvalidDataError(f"column {name!r} declares no categories: list every category it may hold "
                               f"(data.columns.{name}.categories, or the codebook's columns.{name}.categories)")
    if any(isinstance(v, dict | list | tuple | set) or is_missing(v) for v in declared):
        raise InvalidDataError(f"column {name!r}: every declared category must be a single value, "
                               f"got {list(declared)}")
    numeric = pd.api.types.is_numeric_dtype(s.dtype)
    if kind == "boolean" or pd.api.types.is_bool_dtype(s.dtype) or (not numeric and _spelled_in_booleans(declared)):
        out = tuple(_bool_category(v, name) for v in declared)
    elif numeric:
        out = tuple(_number_category(v, name) for v in declared)
    else:
        out = tuple(category_key(v) for v in declared)
    keys = [spelling_key(v) for v in out]
    twice = [out[i] for i, k in enumerate(keys) if keys.index(k) != i]
    if twice:
        raise InvalidDataError(f"column {name!r} declares category {twice[0]!r} twice (two spellings of one value)")
    return out


def _spelled_in_booleans(declared: tuple[Any, ...] | list[Any]) -> bool:
    """Every value a boolean or the word true / false: a boolean column with gaps (stored as object)."""
    return all(isinstance(v, bool | np.bool_) or (isinstance(v, str) and v.strip().lower() in ("true", "false"))
               for v in declared)


def _as_bool(v: Any) -> bool | None:
    v = category_key(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        word = v.strip().lower()
        if word in _TRUE + ("1",):
            return True
        if word in _FALSE + ("0",):
            return False
    return None


def _bool_category(v: Any, name: str) -> bool:
    out = _as_bool(v)
    if out is None:
        raise InvalidDataError(f"column {name!r} is boolean but declares category {v!r}: use false and true")
    return out


def _number_category(v: Any, name: str) -> int | float:
    if isinstance(v, bool | np.bool_):
        return int(v)
    key = spelling_key(v)
    if isinstance(key, bool):
        return int(key)
    try:
        return category_key(float(v))
    except (TypeError, ValueError):
        raise InvalidDataError(f"column {name!r} is numeric but declares category {v!r}: "
                               "declare its numbers, or declare the column's kind") from None
