"""Column views shared by the evaluation metrics: numeric arrays and integer category codes.

Privacy: everything here reads real rows. The views live only inside one ``evaluate`` call; what
comes out of the metrics built on them is NOT privacy-protected (see ``cadasg_dist.evaluate``).

Real and synthetic columns are coded *jointly* (one code book per column over both tables), so a
category that only one side has still gets its own code and counts against fidelity. Numeric
columns also get a discrete view: quantile bins whose edges come from the real column, with
missing as its own bin, which is what the contingency (pair) metrics and Cramér's V read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cadasg_dist.data.categorical import category_key
from cadasg_dist.data.schema import Schema
from cadasg_dist.errors import ContextError, InvalidDataError

MISSING = "(missing)"  # the label of the missing category in every categorical view
NUMERIC_KINDS = ("continuous", "integer", "datetime")
N_BINS = 10  # quantile bins of a numeric column in a numeric-categorical pair
MAX_CONTEXTS = 1000  # more context cells than this is almost surely an un-banded numeric column


@dataclass(frozen=True)
class ColumnView:
    """One column of one table: ``values`` (float, NaN missing) for numeric kinds, and ``codes``
    (int64, 0..n_levels-1) for every kind: categories, or quantile bins for numeric columns."""

    name: str
    kind: str
    values: np.ndarray | None
    codes: np.ndarray
    n_levels: int
    labels: tuple[str, ...]  # display label of each code


def check_columns(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
                  train: pd.DataFrame | None) -> None:
    """Refuse tables that do not carry exactly the schema's columns, naming the offenders."""
    names = set(schema.names)
    ignored = set(schema.dropped)
    problems = []
    for label, df in (("real (holdout)", real), ("synthetic", synthetic), ("train", train)):
        if df is None:
            continue
        missing = [c for c in schema.names if c not in df.columns]
        if missing:
            problems.append(f"the {label} table lacks column(s) {', '.join(map(repr, missing))}")
        if label == "synthetic":
            extra = [str(c) for c in df.columns if c not in names and c not in ignored]
            if extra:
                problems.append(f"the synthetic table has column(s) {', '.join(map(repr, extra))} "
                                "that the schema does not model")
        if len(df) == 0:
            problems.append(f"the {label} table has no rows")
    if problems:
        raise InvalidDataError("mismatched schema: " + "; ".join(problems)
                               + "; evaluate a synthetic table generated from a model of this data")


def numeric_values(s: pd.Series, kind: str) -> np.ndarray:
    """Float view of a numeric column; datetimes as seconds since the epoch; junk becomes NaN."""
    if kind == "datetime":
        parsed = s if pd.api.types.is_datetime64_any_dtype(s) else pd.to_datetime(
            s, errors="coerce", format="mixed")
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        missing = parsed.isna().to_numpy()
        secs = parsed.astype("datetime64[ns]").astype("int64").to_numpy(dtype=float) / 1e9
        return np.where(missing, np.nan, secs)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def category_keys(s: pd.Series, kind: str) -> np.ndarray:
    """String key of every value, so ``1``, ``1.0`` and ``"1"`` (CSV vs Parquet) compare equal.

    Missing values become ``MISSING``. Boolean columns accept True/False, 1/0 and yes/no spellings.
    """
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        x = s.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(x)
        whole = ~missing & (np.mod(np.where(missing, 0, x), 1) == 0) & (np.abs(x) < 2**53)
        keys = np.where(whole, np.where(missing, 0, x).astype(np.int64).astype(str), x.astype(str))
    else:
        missing = s.isna().to_numpy()
        keys = s.map(category_key).to_numpy(dtype=object).astype(str)
    if kind == "boolean":
        keys = np.array([_BOOL_SPELLINGS.get(k.lower(), k) for k in keys], dtype=object).astype(str)
    return np.where(missing, MISSING, keys)


_BOOL_SPELLINGS = {"1": "True", "true": "True", "yes": "True", "0": "False", "false": "False", "no": "False"}


def joint_views(kinds: dict[str, str], real: pd.DataFrame, synthetic: pd.DataFrame
                ) -> tuple[dict[str, ColumnView], dict[str, ColumnView]]:
    """Column views of ``real`` and ``synthetic`` on shared code books (bins from the real side)."""
    out_r, out_s = {}, {}
    for name, kind in kinds.items():
        if kind in NUMERIC_KINDS:
            out_r[name], out_s[name] = _numeric_views(name, kind, real[name], synthetic[name])
        else:
            keys = (category_keys(real[name], kind), category_keys(synthetic[name], kind))
            codes, labels = _shared_codes(keys)
            out_r[name] = ColumnView(name, kind, None, codes[0], len(labels), labels)
            out_s[name] = ColumnView(name, kind, None, codes[1], len(labels), labels)
    return out_r, out_s


def _numeric_views(name: str, kind: str, real: pd.Series, synthetic: pd.Series
                   ) -> tuple[ColumnView, ColumnView]:
    xr, xs = numeric_values(real, kind), numeric_values(synthetic, kind)
    present = xr[~np.isnan(xr)]
    inner = np.linspace(0, 1, N_BINS + 1)[1:-1]
    edges = np.unique(np.quantile(present, inner)) if present.size else np.zeros(0)
    n_levels = len(edges) + 2  # bins below/between/above the edges, then the missing bin
    labels = tuple([f"bin {i + 1}" for i in range(len(edges) + 1)] + [MISSING])
    views = []
    for x in (xr, xs):
        codes = np.searchsorted(edges, np.nan_to_num(x), side="right").astype(np.int64)
        codes[np.isnan(x)] = n_levels - 1
        views.append(ColumnView(name, kind, x, codes, n_levels, labels))
    return views[0], views[1]


def _shared_codes(keys: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], tuple[str, ...]]:
    both = np.concatenate(keys)
    codes, uniques = pd.factorize(both, sort=True)
    out, start = [], 0
    for k in keys:
        out.append(codes[start:start + len(k)].astype(np.int64))
        start += len(k)
    return out, tuple(str(u) for u in uniques)


def context_ids(kinds: dict[str, str], columns: list[str], frames: list[pd.DataFrame]
                ) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """Context cell id of every row of each frame, on one shared list of cells (context keys)."""
    if not columns:
        return [np.zeros(len(f), dtype=np.int64) for f in frames], [{}]
    per_col = []
    for col in columns:
        codes, labels = _shared_codes(tuple(category_keys(f[col], kinds[col]) for f in frames))
        per_col.append((codes, labels))
    sizes = [len(labels) for _, labels in per_col]
    flat = [np.ravel_multi_index([codes[i] for codes, _ in per_col], sizes) for i in range(len(frames))]
    cells, inverse = np.unique(np.concatenate(flat), return_inverse=True)
    if len(cells) > MAX_CONTEXTS:
        raise ContextError(f"context columns {', '.join(columns)} make {len(cells)} cells (over {MAX_CONTEXTS}); "
                           "evaluate on categorical context columns, or band numeric ones first")
    keys = []
    for cell in cells:
        idx = np.unravel_index(cell, sizes)
        keys.append({col: per_col[j][1][int(idx[j])] for j, col in enumerate(columns)})
    out, start = [], 0
    for f in frames:
        out.append(inverse[start:start + len(f)].astype(np.int64))
        start += len(f)
    return out, keys
