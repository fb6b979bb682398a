"""Context extractors: map each row to a context id.

A context is a tuple of labels, one per context column: a category value, a numeric band
``"[40, 65)"``, or a date period (``"1985"``, ``"1985Q2"``, ``"1985-03"``). ``ContextExtractor`` is
the interface; ``RuleContextExtractor`` is the rule-based one from config. A learned extractor
(for example clusters in latent space) implements the same methods.

Privacy: the *domain* (the list of contexts) is read from the data unless declared. With rules,
bands and periods are declared public; the set of observed category combinations is a private
statistic (``domain_source == "data"``) that a private run must either declare or release with a
DP mechanism. Per-context counts live in the cache, where they are noised.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import ContextConfig
from cadasg_dist.context.labels import same_bounds, same_interval
from cadasg_dist.data.schema import Schema, datetime_to_seconds
from cadasg_dist.errors import ContextError, InvalidDataError

Label = Any
ContextKey = tuple[Label, ...]


class ContextExtractor(abc.ABC):
    """Maps rows to integer context ids over a fixed domain of context keys."""

    columns: tuple[str, ...]
    domain: list[ContextKey]

    @abc.abstractmethod
    def fit(self, df: pd.DataFrame) -> ContextExtractor: ...

    @abc.abstractmethod
    def ids(self, df: pd.DataFrame) -> np.ndarray:
        """(N,) int64 context id of each row; raises ContextError for a context outside the domain."""

    @abc.abstractmethod
    def resolve(self, fixed: dict[str, Any]) -> np.ndarray:
        """Ids of every context matching a partial assignment {column: value}."""

    @abc.abstractmethod
    def fill(self, df: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
        """Write the context columns of generated rows so they agree with their context ids."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @property
    def n_contexts(self) -> int:
        return len(self.domain)

    def describe(self, cid: int) -> dict[str, Label]:
        return dict(zip(self.columns, self.domain[cid]))


class RuleContextExtractor(ContextExtractor):
    """Contexts from config rules: categorical columns, numeric bands, date periods, combined."""

    def __init__(self, config: ContextConfig, schema: Schema) -> None:
        self.config = config
        self.schema = schema
        self.columns = tuple(config.columns)
        for col in self.columns:
            if col not in schema.names:
                raise InvalidDataError(f"unknown context column {col!r}; columns: {', '.join(schema.names)}")
            kind = schema[col].kind
            if kind in ("continuous", "integer") and col not in config.bands:
                raise InvalidDataError(f"context column {col!r} is numeric: give its bands "
                                       f"(context.bands.{col}: [edges...]) or declare it categorical")
            if kind == "datetime" and col not in config.periods:
                raise InvalidDataError(f"context column {col!r} is a date: give its period "
                                       f"(context.periods.{col}: year|quarter|month)")
        self.domain: list[ContextKey] = []
        self.domain_source = "data"
        self._index: dict[ContextKey, int] = {}

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        """Context columns whose value *is* the label: fixed by the context, never generated."""
        return tuple(c for c in self.columns if self.schema[c].kind in ("categorical", "boolean"))

    def _labels(self, df: pd.DataFrame) -> list[list[Label]]:
        out = []
        for col in self.columns:
            if col not in df.columns:
                raise InvalidDataError(f"the table lacks context column {col!r}")
            kind = self.schema[col].kind
            s = df[col]
            if kind in ("categorical", "boolean"):
                out.append([_plain(v) for v in s.tolist()])
            elif kind == "datetime":
                out.append(period_labels(s, self.config.periods[col]))
            else:
                out.append(band_labels(pd.to_numeric(s, errors="coerce").to_numpy(float), self.config.bands[col]))
        return out

    def fit(self, df: pd.DataFrame) -> RuleContextExtractor:
        """The domain observed in ``df`` (exact: a non-private fit only)."""
        return self.with_domain(set(zip(*self._labels(df))) if self.columns else [()], source="data")

    def with_domain(self, keys: Any, *, source: str) -> RuleContextExtractor:
        """Set the context domain to ``keys`` (label tuples, in a canonical order); ``source`` says
        where they came from: "data" (read from rows), "declared" or "dp" (a private run)."""
        self.domain = sorted(keys, key=lambda k: tuple((v is None, str(type(v)), v) for v in k))
        self.domain_source = source
        self._index = {k: i for i, k in enumerate(self.domain)}
        return self

    def ids(self, df: pd.DataFrame) -> np.ndarray:
        if not self.columns:
            return np.zeros(len(df), dtype=np.int64)
        out = np.empty(len(df), dtype=np.int64)
        for i, key in enumerate(zip(*self._labels(df))):
            cid = self._index.get(key)
            if cid is None:
                raise ContextError(f"context {dict(zip(self.columns, key))} was not seen in training; "
                                   f"known: {self.known_text()}")
            out[i] = cid
        return out

    def known_text(self, limit: int = 12) -> str:
        shown = [", ".join(f"{c}={v}" for c, v in zip(self.columns, k)) for k in self.domain[:limit]]
        more = f" ... ({len(self.domain)} in all)" if len(self.domain) > limit else ""
        return "; ".join(shown) + more

    def resolve(self, fixed: dict[str, Any]) -> np.ndarray:
        unknown = [c for c in fixed if c not in self.columns]
        if unknown:
            raise ContextError(f"unknown context column {unknown[0]!r}; context columns: "
                               f"{', '.join(self.columns) or '(none)'}")
        mask = np.ones(len(self.domain), dtype=bool)
        for col, value in fixed.items():
            j = self.columns.index(col)
            labels = [k[j] for k in self.domain]
            match = np.array([_same_label(lab, value, col in self.config.bands) for lab in labels])
            if not match.any():  # "40-55" for a category "[40, 55)": the one label of those bounds
                loose = np.array([same_bounds(lab, value) for lab in labels])
                match = loose if len({lab for lab, hit in zip(labels, loose) if hit}) == 1 else match
            if not match.any():
                valid = sorted({str(lab) for lab in labels})
                raise ContextError(f"unknown value {value!r} for context column {col!r}; valid values: "
                                   f"{', '.join(valid)}")
            mask &= match
        ids = np.flatnonzero(mask)
        if ids.size == 0:
            raise ContextError(f"no training context matches {fixed}; known: {self.known_text()}")
        return ids

    def fill(self, df: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
        for j, col in enumerate(self.columns):
            labels = [k[j] for k in self.domain]
            kind = self.schema[col].kind
            if kind in ("categorical", "boolean"):
                df[col] = _restored_take(labels, ids, self.schema[col].dtype, df.index)
            elif kind == "datetime":
                continue  # generated inside its period by the decoder; periods are coarse
            else:
                lo = np.array([_band_bounds(lab)[0] for lab in labels])[ids]
                hi = np.array([_band_bounds(lab)[1] for lab in labels])[ids]
                x = df[col].to_numpy(dtype=float, na_value=np.nan)
                integral = self.schema[col].kind == "integer"
                upper = np.where(np.isfinite(hi), hi - (1 if integral else 1e-9 * np.maximum(1, np.abs(hi))), hi)
                clipped = np.clip(x, lo, upper)
                df[col] = pd.Series(clipped, index=df.index).astype(df[col].dtype, errors="ignore")
        return df

    def to_dict(self) -> dict[str, Any]:
        return {"type": "rule", "columns": list(self.columns),
                "bands": {k: list(v) for k, v in self.config.bands.items()}, "periods": dict(self.config.periods),
                "domain": [list(k) for k in self.domain],
                "domain_source": self.domain_source}

    @classmethod
    def from_dict(cls, d: dict[str, Any], schema: Schema) -> RuleContextExtractor:
        cfg = ContextConfig(columns=tuple(d["columns"]), bands={k: tuple(v) for k, v in d["bands"].items()},
                            periods=dict(d["periods"]))
        ex = cls(cfg, schema)
        ex.domain = [tuple(k) for k in d["domain"]]
        ex.domain_source = d.get("domain_source", "data")
        ex._index = {k: i for i, k in enumerate(ex.domain)}
        return ex


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
    if v is pd.NA:
        return None
    return v


def _same_label(label: Label, value: Any, banded: bool) -> bool:
    """Whether a user's ``value`` names ``label``: equal, the same number, or (spelling aside) the
    same interval: a band of ``context.bands`` by its bounds (``"[40,55)"`` and ``"40-55"`` name
    ``"[40, 55)"``), an interval-like category of a user's band column by its ends too."""
    if label == value or str(label) == str(value):
        return True
    if banded and label is not None:
        if same_bounds(label, value):
            return True
        try:
            x = float(value)
        except (TypeError, ValueError):
            return False
        lo, hi = _band_bounds(label)
        return lo <= x < hi
    if isinstance(value, str) and same_interval(label, value):
        return True
    try:
        return float(label) == float(value)
    except (TypeError, ValueError):
        return False


def band_labels(x: np.ndarray, edges: tuple[float, ...]) -> list[Label]:
    edges_arr = np.asarray(edges, dtype=float)
    idx = np.searchsorted(edges_arr, x, side="right") - 1
    labels: list[Label] = []
    for xi, k in zip(x, idx):
        if np.isnan(xi):
            labels.append(None)
        elif k < 0:
            labels.append(f"[-inf, {_fmt(edges_arr[0])})")
        elif k >= len(edges_arr) - 1:
            labels.append(f"[{_fmt(edges_arr[-1])}, inf)")
        else:
            labels.append(f"[{_fmt(edges_arr[k])}, {_fmt(edges_arr[k + 1])})")
    return labels


def _band_bounds(label: str) -> tuple[float, float]:
    lo, hi = label.strip("[)").split(",")
    return float(lo), float(hi)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def period_labels(s: pd.Series, period: str) -> list[Label]:
    seconds = datetime_to_seconds(s)
    ts = pd.to_datetime(pd.Series(seconds * 1e9).round().astype("Int64"), errors="coerce")
    if period == "year":
        labels = ts.dt.year.astype("Int64").astype(str)
    elif period == "quarter":
        labels = ts.dt.year.astype("Int64").astype(str) + "Q" + ts.dt.quarter.astype("Int64").astype(str)
    else:
        labels = ts.dt.strftime("%Y-%m")
    return [None if (v is None or v == "<NA>" or (isinstance(v, float) and math.isnan(v))) else v for v in labels]


def _restored_take(labels: list[Label], ids: np.ndarray, dtype: str, index: pd.Index) -> pd.Series:
    """``_restore(Series(labels[ids]), dtype)`` with the type inference done once per drawn label,
    not per row: the labels that occur are restored (the same values, so the same dtype), then
    taken by position."""
    drawn = np.flatnonzero(np.bincount(ids, minlength=len(labels)))
    restored = _restore(pd.Series(np.array(labels, dtype=object)[drawn]), dtype)
    at = np.zeros(len(labels), dtype=np.int64)
    at[drawn] = np.arange(len(drawn))
    out = restored.take(at[ids])
    out.index = index
    return out


def _restore(s: pd.Series, dtype: str) -> pd.Series:
    try:
        if dtype.startswith(("int", "float", "bool")):
            if s.isna().any():
                return s.astype("Int64" if dtype.startswith("int") else "object")
            return s.astype(dtype)
        return s.astype(object)
    except (TypeError, ValueError):
        return s
