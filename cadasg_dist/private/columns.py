"""Column kinds and declarations of a private run, read without looking at any value.

A private run takes each column's kind from its declaration (``data.columns.X.kind``) or, failing
that, from its storage type (the pandas dtype: public metadata, like the column names); category
sets and bounds come from declarations or from the DP releases of ``private.releases``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig, ColumnOverride, DataConfig
from cadasg_dist.data.schema import (
    MAX_INTEGER_LEVELS,
    ColumnSchema,
    datetime_to_seconds,
    storage_kind,
)
from cadasg_dist.data.values import CategoryMatcher, declared_categories
from cadasg_dist.errors import ConfigError, InvalidDataError

log = logging.getLogger(__name__)

NUMERIC = ("continuous", "integer", "datetime")


@dataclass
class PrivateColumn:
    name: str
    kind: str
    dtype: str
    override: ColumnOverride
    lo: float | None = None
    hi: float | None = None
    categories: tuple[Any, ...] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    has_missing: bool = False
    mode: Any = None  # most common category (noisy), the fill for a missing value without a slot
    coded: bool = False  # categorical whose categories are the integers within its bounds
    fitted: dict[str, Any] = field(default_factory=dict)  # ContinuousTransform fields
    histogram: np.ndarray | None = None  # noisy [missing, per category] counts of a categorical column


def unit_data_config(cfg: CADASGConfig) -> DataConfig:
    """The data config with the unit column declared an identifier (never modelled)."""
    unit = cfg.privacy.unit
    if unit is None:
        return cfg.data
    columns = dict(cfg.data.columns)
    columns[unit] = dataclasses.replace(columns.get(unit, ColumnOverride()), kind="identifier")
    return dataclasses.replace(cfg.data, columns=columns)


def read_columns(df: pd.DataFrame, data_cfg: DataConfig, cfg: CADASGConfig) -> tuple[list[PrivateColumn], list[str]]:
    unknown = sorted(set(data_cfg.columns) - set(map(str, df.columns)))
    if unknown:
        raise InvalidDataError(f"data.columns (the config or a codebook) declares column {unknown[0]!r}, "
                               "which the table does not have; "
                               f"columns: {', '.join(map(str, df.columns))}")
    columns, dropped = [], []
    for name in map(str, df.columns):
        override = data_cfg.columns.get(name, ColumnOverride())
        if override.kind == "identifier":
            dropped.append(name)
        if override.kind in ("identifier", "derived"):  # derived: computed at sampling, never read
            continue
        kind = override.kind or storage_kind(df[name], name)
        if override.kind is None and override.categories is not None and kind != "boolean":
            kind = "categorical"  # a declared category set declares the kind (a float column of codes with gaps)
        col = PrivateColumn(name, kind, str(df[name].dtype), override)
        col.coded = kind == "categorical" and override.categories is None and numeric_dtype(col)
        if (kind in NUMERIC or col.coded) and override.min is not None and override.max is not None:
            col.lo, col.hi = float(override.min), float(override.max)
            if col.lo > col.hi:
                raise InvalidDataError(f"column {name!r}: declared min {col.lo} is above max {col.hi}")
            col.sources["bounds"] = "declared"
        elif kind == "boolean" or (kind == "categorical" and override.categories is not None):
            # by value, whatever the YAML spelling: [false, true], ["False", "True"] and [0, 1] are one set
            declared = (False, True) if override.categories is None else override.categories
            col.categories = declared_categories(declared, df[name], kind, name)
            col.sources["categories"] = "declared"
        elif kind not in NUMERIC + ("categorical",):
            raise InvalidDataError(f"column {name!r}: unknown kind {kind!r}; use continuous, integer, "
                                   "categorical, boolean, datetime or identifier")
        columns.append(col)
    if cfg.target is not None and cfg.target in dropped:
        raise InvalidDataError(f"target column {cfg.target!r} is declared an identifier")
    if not columns:
        raise InvalidDataError("no column is left to model once identifiers are dropped")
    return columns, dropped


def conform_categories(df: pd.DataFrame, columns: list[PrivateColumn]) -> pd.DataFrame:
    """``df`` with each value of a column with a declared category set spelled as its category,
    and a value outside the set made missing.

    Privacy: a value outside the declared set is neither printed, logged nor counted aloud (its
    row count is a statistic of the table); it then falls in the missing cell of the column's
    histogram release, so the column gets a missing slot only when the released count says so,
    and otherwise ``prepare.conform`` fills it with the noisy mode. Each row is changed on its
    own: no extra cost."""
    out = df
    for col in columns:
        if col.categories is None or col.name not in df.columns:
            continue
        if out is df:
            out = df.copy()
        out[col.name] = CategoryMatcher(col.categories).conform(df[col.name])
    return out


def check_declarations(columns: list[PrivateColumn], cfg: CADASGConfig) -> None:
    """Refuse a private run that would have to read a category set (or, with
    ``privacy.preprocessing: declared``, a bound) from the data: ONE error naming every such
    column, with a YAML block to paste drawn from the declared facts only (names, declared or
    storage kinds), never from the values."""
    text = [c for c in columns if c.kind == "categorical" and c.categories is None and not c.coded]
    bounds = [c for c in columns if c.lo is None and (c.kind in NUMERIC or c.coded)]
    if cfg.privacy.preprocessing != "declared":
        bounds = []
    if not (text or bounds):
        return
    parts = []
    if text:
        parts.append("a private run cannot read category sets from the data; declare them for: "
                     + ", ".join(c.name for c in text))
    if bounds:
        parts.append("privacy.preprocessing is 'declared' but these columns have no declared bounds: "
                     + ", ".join(c.name for c in bounds) + " (or set privacy.preprocessing: dp to estimate them "
                     "with part of the budget)")
    raise ConfigError("; ".join(parts) + ". Paste this under data.columns in the config (or columns in a "
                      "codebook) and fill in every [] and ? from the data's documentation, or declare a column "
                      "kind: identifier to drop it:\n" + declaration_block(text + bounds)
                      + "\n`cadasg schema DATA --out codebook.yaml` drafts a whole codebook to confirm "
                      "and pass with --codebook")


def declaration_block(columns: list[PrivateColumn]) -> str:
    """One YAML line per column to declare, from its name and (declared or storage) kind only."""
    lines = []
    for c in columns:
        key = c.name if c.name.isidentifier() else json.dumps(c.name)
        if c.kind == "categorical":
            lines.append(f"  {key}: {{kind: categorical, categories: []}}")
        else:
            lines.append(f"  {key}: {{kind: {c.kind}, min: ?, max: ?}}")
    return "\n".join(lines)


def numeric_dtype(col: PrivateColumn) -> bool:
    return col.dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))


def settle_kind(col: PrivateColumn, max_categories: int, target: str | None = None) -> None:
    """Post-processing of the (declared or released) bounds: a numeric-coded categorical, an
    undeclared integer column with at most MAX_INTEGER_LEVELS values in range (as ``infer_schema``
    does with distinct values), and the TARGET declared integer with at most MAX_INTEGER_LEVELS
    values in range get the integers within the bounds as categories.

    The target's rule is why a drafted codebook gives what an undeclared kind gives: the draft says
    ``integer`` for a count with a long thin tail (rwm5yr's ``hospvis``: 22 values seen), whose
    released bounds clip the tail to a few levels; modelled as a number, the classifier the
    synthetic rows train would learn a regression's blur. Declare the target ``continuous`` to
    model it as a number whatever its range."""
    few = col.kind == "integer" and col.hi - col.lo + 1 <= MAX_INTEGER_LEVELS
    if few and (col.override.kind is None or col.name == target):
        col.kind, col.coded = "categorical", True
    if col.coded:
        if col.hi - col.lo + 1 > max_categories:
            raise ConfigError(f"column {col.name!r} is categorical but its bounds [{col.lo:g}, {col.hi:g}] hold more "
                              f"than data.max_categories={max_categories} integers; declare its categories "
                              f"(data.columns.{col.name}.categories)")
        col.categories = tuple(range(int(col.lo), int(col.hi) + 1))
        col.sources = {"categories": col.sources.pop("bounds")}


def numeric_values(s: pd.Series, kind: str) -> np.ndarray:
    """Float values with NaN for missing (datetimes as seconds)."""
    if kind == "datetime":
        out = np.full(len(s), np.nan)
        present = s.notna().to_numpy()
        out[present] = datetime_to_seconds(s[present])
        return out
    try:
        return pd.to_numeric(s).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise InvalidDataError(f"column {s.name!r} is {kind} but holds non-numeric values") from None


def schema_column(col: PrivateColumn) -> ColumnSchema:
    dtype = col.dtype
    if col.kind == "integer" and dtype.startswith("float"):
        dtype = "Int64" if col.has_missing else "int64"
    numeric = col.kind in NUMERIC
    return ColumnSchema(name=col.name, kind=col.kind, dtype=dtype, has_missing=col.has_missing,
                        min=col.lo if numeric else None, max=col.hi if numeric else None,
                        categories=col.categories, sources=dict(col.sources))
