"""Schema inference: what kind each column is, with overrides from config.

Privacy: inference reads the *types and distinct counts* of the real table to pick a kind. The
kind of a column is treated as public metadata (it is what a data dictionary would publish); the
values that transforms later read (bounds, categories, quantiles) are tracked separately in
``ColumnSchema.sources``: "declared" (public, from config) or "data" (private, estimated from the
real rows and owed to the privacy ledger when training is private). A *derived* column
(``DerivedColumn``, ``kind: derived`` in config) is a declared function of another column: its
values are never read, only its storage type (public metadata, like every kind).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import ColumnOverride, DataConfig
from cadasg_dist.data.values import CategoryMatcher, declared_categories
from cadasg_dist.errors import InvalidDataError

# Integer columns with at most this many distinct values are modelled as categories (years,
# education levels, 0/1 flags); above it they are counts or measurements.
MAX_INTEGER_LEVELS = 12
_ID_NAME = re.compile(r"(^id$|^.*_id$|^id_.*$|^.*uuid.*$)", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: str  # continuous | integer | categorical | boolean | datetime
    dtype: str  # pandas dtype of the original column, restored on output
    has_missing: bool
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] | None = None
    # statistic -> "declared" (public) or "data" (private, owed to the ledger)
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "dtype": self.dtype, "has_missing": self.has_missing,
            "min": self.min, "max": self.max,
            "categories": None if self.categories is None else list(self.categories),
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSchema:
        cats = d.get("categories")
        return cls(name=d["name"], kind=d["kind"], dtype=d["dtype"], has_missing=bool(d["has_missing"]),
                   min=d.get("min"), max=d.get("max"), categories=None if cats is None else tuple(cats),
                   sources=dict(d.get("sources", {})))


@dataclass(frozen=True)
class DerivedColumn:
    """A column declared an indicator of another: 1 where column ``of`` equals ``equals``, 0 where
    it holds another value, missing where it is missing. Declared public: the real column's values
    are never read or modelled; ``compute`` makes it from the synthetic ``of`` column."""

    name: str
    of: str
    equals: Any
    dtype: str  # pandas dtype of the original column, restored on output

    def compute(self, source: pd.Series) -> pd.Series:
        missing = source.isna().to_numpy()
        hit = source.map(_match_key).to_numpy() == _match_key(self.equals)
        values = pd.Series(hit.astype(np.int64), index=source.index, name=self.name)
        if missing.any():
            values = values.astype("Int64").mask(missing)
        if self.dtype == "bool":
            return values.astype("boolean" if missing.any() else bool)
        if self.dtype.startswith("float"):
            return values.astype(self.dtype)
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "of": self.of, "equals": _plain_scalar(self.equals), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DerivedColumn:
        return cls(name=d["name"], of=d["of"], equals=d["equals"], dtype=d["dtype"])


def _match_key(v: Any) -> str:
    """A value as a derived column compares it: 1, 1.0, "1" and np.int64(1) are one value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColumnSchema, ...]
    dropped: tuple[str, ...] = ()  # declared identifiers, never modelled
    derived: tuple[DerivedColumn, ...] = ()  # declared functions of a modelled column, never modelled
    order: tuple[str, ...] = ()  # every output column (modelled and derived) in the table's order

    @property
    def names(self) -> list[str]:
        """The modelled columns."""
        return [c.name for c in self.columns]

    @property
    def output_names(self) -> list[str]:
        """Every column a synthetic table holds: the modelled and the derived ones, in table order."""
        return list(self.order) if self.order else self.names + [d.name for d in self.derived]

    def with_derived(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (the modelled columns) with the derived columns added, in output order."""
        if not self.derived:
            return frame[[c for c in self.names if c in frame.columns]]
        frame = frame.copy()
        for d in self.derived:
            frame[d.name] = d.compute(frame[d.of])
        return frame[[c for c in self.output_names if c in frame.columns]]

    def evaluation_schema(self) -> Schema:
        """The schema of a synthetic table, derived columns included as 0/1 categories, for metrics
        that read every output column."""
        if not self.derived:
            return self
        extra = {d.name: ColumnSchema(name=d.name, kind="categorical", dtype=d.dtype,
                                      has_missing=self[d.of].has_missing, categories=(0, 1)) for d in self.derived}
        by_name = {c.name: c for c in self.columns} | extra
        return Schema(columns=tuple(by_name[n] for n in self.output_names), dropped=self.dropped)

    def __getitem__(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def private_statistics(self) -> list[str]:
        """Statistics read from real rows rather than declared: what a private run must pay for."""
        return [f"{c.name}.{stat}" for c in self.columns for stat, src in c.sources.items() if src == "data"]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "dropped": list(self.dropped),
                "derived": [d.to_dict() for d in self.derived], "order": list(self.order)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        return cls(columns=tuple(ColumnSchema.from_dict(c) for c in d["columns"]), dropped=tuple(d.get("dropped", ())),
                   derived=tuple(DerivedColumn.from_dict(x) for x in d.get("derived", ())),
                   order=tuple(d.get("order", ())))


def infer_schema(df: pd.DataFrame, config: DataConfig | None = None) -> Schema:
    """Infer a ``Schema`` for ``df``; ``config.columns`` overrides kinds, bounds and categories.

    Raises ``InvalidDataError`` for an empty table, an override naming an unknown column, or an
    undeclared identifier-like column (unique per row, a free-text column, or an ``id`` name).
    """
    config = config or DataConfig()
    if df.shape[0] == 0:
        raise InvalidDataError("the table has no rows")
    unknown = sorted(set(config.columns) - set(df.columns))
    if unknown:
        raise InvalidDataError(f"data.columns (the config or a codebook) declares column {unknown[0]!r}, "
                               "which the table does not have; "
                               f"columns: {', '.join(map(str, df.columns))}")
    derived = declared_derived(df, config)
    columns, dropped = [], []
    for name in df.columns:
        override = config.columns.get(str(name), ColumnOverride())
        if override.kind == "identifier":
            dropped.append(str(name))
        if override.kind in ("identifier", "derived"):  # derived: computed at sampling, never read
            continue
        columns.append(_infer_column(df[name], str(name), override, config.max_categories))
    if not columns:
        raise InvalidDataError("no column is left to model once identifiers are dropped")
    return Schema(columns=tuple(columns), dropped=tuple(dropped), derived=derived,
                  order=output_order(df, config))


def declared_derived(df: pd.DataFrame, config: DataConfig) -> tuple[DerivedColumn, ...]:
    """The columns ``config`` declares derived, checked against the table's column names and the
    other declarations (no value is read). Raises ``InvalidDataError`` naming the bad declaration."""
    out = []
    for name, override in config.columns.items():
        if override.kind != "derived":
            if override.of is not None or override.equals is not None:
                raise InvalidDataError(f"column {name!r} sets of/equals but is not derived: add "
                                       f"data.columns.{name}.kind: derived, or drop of/equals")
            continue
        source = config.columns.get(str(override.of), ColumnOverride())
        if override.of is None or override.equals is None:
            raise InvalidDataError(f"derived column {name!r} needs both data.columns.{name}.of (the column it "
                                   f"indicates) and data.columns.{name}.equals (the value where it is 1)")
        if override.of not in df.columns or override.of == name or source.kind in ("identifier", "derived"):
            raise InvalidDataError(f"derived column {name!r}: of={override.of!r} must name another modelled "
                                   "column of the table (not an identifier or a derived column)")
        if source.categories is not None and _match_key(override.equals) not in map(_match_key, source.categories):
            raise InvalidDataError(f"derived column {name!r}: equals={override.equals!r} is not a declared "
                                   f"category of {override.of!r}: use one of {list(source.categories)}")
        out.append(DerivedColumn(name=name, of=str(override.of), equals=_plain_scalar(override.equals),
                                 dtype=str(df[name].dtype)))
    return tuple(out)


def output_order(df: pd.DataFrame, config: DataConfig) -> tuple[str, ...]:
    """The table's columns but the identifiers: the order of a synthetic table's columns."""
    kinds = {name: o.kind for name, o in config.columns.items()}
    return tuple(str(c) for c in df.columns if kinds.get(str(c)) != "identifier")


def _infer_column(s: pd.Series, name: str, override: ColumnOverride, max_categories: int) -> ColumnSchema:
    present = s.dropna()
    has_missing = bool(s.isna().any())
    if present.empty:
        raise InvalidDataError(f"column {name!r} has no values: drop it or declare it as identifier")
    kind = override.kind or _guess_kind(present, name, len(s), max_categories)
    dtype = str(s.dtype)
    sources: dict[str, str] = {}
    lo = hi = None
    cats = None
    if kind in ("continuous", "integer", "datetime"):
        values = _as_float(present, kind, name)
        lo = float(override.min) if override.min is not None else float(values.min())
        hi = float(override.max) if override.max is not None else float(values.max())
        if lo > hi:
            raise InvalidDataError(f"column {name!r}: declared min {lo} is above max {hi}")
        both_declared = override.min is not None and override.max is not None
        sources["bounds"] = "declared" if both_declared else "data"
        sources["quantiles"] = "data"
        if kind == "integer" and dtype.startswith("float"):
            dtype = "Int64" if has_missing else "int64"
    elif kind in ("categorical", "boolean"):
        if override.categories is not None:  # by value, whatever their YAML spelling
            cats = declared_categories(override.categories, s, kind, name)
            sources["categories"] = "declared"
            _refuse_outside(present, cats, name)
        else:
            cats = tuple(_sorted_values(present.unique()))
            sources["categories"] = "data"
        if kind == "boolean":
            cats = (False, True) if override.categories is None else cats
            sources["categories"] = "declared"  # {False, True} is known without looking
    else:
        raise InvalidDataError(f"column {name!r}: unknown kind {kind!r}; use continuous, integer, "
                               "categorical, boolean, datetime, identifier or derived")
    return ColumnSchema(name=name, kind=kind, dtype=dtype, has_missing=has_missing, min=lo, max=hi,
                        categories=cats, sources=sources)


def _refuse_outside(present: pd.Series, categories: tuple[Any, ...], name: str) -> None:
    """A non-private run's values outside a declared set: one error with the count and the fix (a
    private run makes them missing instead, without a word: ``private.columns``)."""
    outside = CategoryMatcher(categories).outside(present)
    if outside.any():
        examples = list(dict.fromkeys(present[outside].tolist()))[:5]
        raise InvalidDataError(
            f"column {name!r}: {int(outside.sum())} rows hold values outside its declared category set "
            f"(such as {', '.join(map(repr, examples))}); add them to the set (the codebook's "
            f"columns.{name}.categories or data.columns.{name}.categories) or remove those rows")


def storage_kind(s: pd.Series, name: str) -> str:
    """Kind from the storage type alone (public metadata), never from the values: what a private
    run reads where a column's kind is not declared (``infer_schema`` also reads the values)."""
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if _ID_NAME.match(name):
        _refuse_identifier(name, "its name marks it as an identifier")
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_numeric_dtype(s):
        return "continuous"
    return "categorical"


def _guess_kind(present: pd.Series, name: str, n_rows: int, max_categories: int) -> str:
    kind, why = guess_kind(present, name, n_rows, max_categories)
    if why is not None:
        _refuse_identifier(name, why)
    return kind


def guess_kind(present: pd.Series, name: str, n_rows: int, max_categories: int) -> tuple[str, str | None]:
    """The kind ``infer_schema`` reads from a column's present values, and why the column looks like
    an identifier (kind "identifier") or None. Reads the values: a draft, not a declaration."""
    n_unique = present.nunique()
    if pd.api.types.is_bool_dtype(present):
        return "boolean", None
    if pd.api.types.is_datetime64_any_dtype(present):
        return "datetime", None
    if pd.api.types.is_numeric_dtype(present):
        integral = bool(np.all(np.mod(present.to_numpy(dtype=float), 1) == 0))
        if integral and _ID_NAME.match(name):
            return "identifier", "its name marks it as an identifier"
        if integral and n_unique == n_rows and n_rows > 50 and present.is_monotonic_increasing:
            return "identifier", "it is a unique, increasing integer per row"
        if integral and n_unique <= MAX_INTEGER_LEVELS:
            return "categorical", None
        return ("integer" if integral else "continuous"), None
    # text
    if _ID_NAME.match(name) or (n_unique == n_rows and n_rows > 50):
        return "identifier", "it is unique per row"
    if n_unique > max_categories:
        if _looks_like_dates(present):
            return "datetime", None
        return "identifier", f"it is free text with {n_unique} distinct values"
    if _looks_like_dates(present) and n_unique > MAX_INTEGER_LEVELS:
        return "datetime", None
    return "categorical", None


def _refuse_identifier(name: str, why: str) -> None:
    raise InvalidDataError(
        f"column {name!r} looks like an identifier ({why}); identifiers are a privacy risk, not a "
        f"feature: drop it, or declare it in the config (data.columns.{name}.kind: identifier to "
        "drop it, or categorical to model it)")


def _looks_like_dates(present: pd.Series) -> bool:
    sample = present.astype(str).head(200)
    if not sample.str.contains(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}", regex=True).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def _as_float(present: pd.Series, kind: str, name: str) -> np.ndarray:
    if kind == "datetime":
        return datetime_to_seconds(present)
    try:
        return pd.to_numeric(present).to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise InvalidDataError(f"column {name!r} is declared {kind} but holds non-numeric values "
                               f"such as {present.iloc[0]!r}") from None


def datetime_to_seconds(values: pd.Series) -> np.ndarray:
    parsed = pd.to_datetime(values, errors="coerce", format="mixed") if not pd.api.types.is_datetime64_any_dtype(
        values) else values
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    parsed = parsed.astype("datetime64[ns]")
    seconds = parsed.astype("int64").to_numpy(dtype=float) / 1e9
    return np.where(parsed.isna().to_numpy(), np.nan, seconds)  # NaT is int64 min, not a date


def _sorted_values(values: Any) -> list[Any]:
    out = [_plain_scalar(v) for v in values]
    try:
        return sorted(out)
    except TypeError:
        return sorted(out, key=str)


def _plain_scalar(v: Any) -> Any:
    """Numpy scalars to Python ones, so category sets serialise to JSON unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    return v
