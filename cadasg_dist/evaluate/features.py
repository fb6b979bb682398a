"""Encoded feature matrices for the distance-based metrics (covariance, MMD, precision/recall,
DCR, membership inference).

Privacy: the encoder is fitted on the real holdout rows (quantiles, category sets). It lives only
inside one ``evaluate`` call and is never saved; the metrics built on it are NOT private.

The features are the model's own encoding (``DataTransformer``: Gaussian quantile map for numeric
columns, one-hot for categories, a present/missing pair for numeric columns with gaps), with two
changes for measurement rather than training: ties are mapped to the *middle* of their probability
mass instead of a random point, so equal rows encode equally (an exact copy must sit at distance
0), and the schema is widened to every category, gap and range seen in any of the tables, so a
synthetic value outside the real support is measured rather than refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from cadasg_dist.data.categorical import category_key
from cadasg_dist.data.schema import Schema
from cadasg_dist.data.transforms import CategoricalTransform, ContinuousTransform, DataTransformer
from cadasg_dist.evaluate.prepare import NUMERIC_KINDS, numeric_values


class _MidpointTies:
    """Stands in for the generator the quantile map draws tie positions from: always the middle."""

    def random(self, size: int) -> np.ndarray:
        return np.full(size, 0.5)


def widened_schema(schema: Schema, frames: list[pd.DataFrame]) -> Schema:
    """``schema`` with categories, missing flags and bounds widened to what ``frames`` hold."""
    columns = []
    for col in schema.columns:
        has_missing = col.has_missing or any(bool(f[col.name].isna().any()) for f in frames)
        if col.kind in NUMERIC_KINDS:
            present = [x[~np.isnan(x)] for x in (numeric_values(f[col.name], col.kind) for f in frames)]
            lows = [float(x.min()) for x in present if x.size] + [v for v in (col.min,) if v is not None]
            highs = [float(x.max()) for x in present if x.size] + [v for v in (col.max,) if v is not None]
            columns.append(dataclasses.replace(col, has_missing=has_missing, min=min(lows, default=0.0),
                                               max=max(highs, default=0.0)))
            continue
        cats = list(col.categories or ())
        seen = {category_key(c) for c in cats}
        for f in frames:
            for v in pd.unique(f[col.name].dropna()):
                if category_key(v) not in seen:
                    seen.add(category_key(v))
                    cats.append(v.item() if isinstance(v, np.generic) else v)
        columns.append(dataclasses.replace(col, has_missing=has_missing, categories=tuple(cats)))
    return Schema(columns=tuple(columns), dropped=schema.dropped)


def fit_encoder(schema: Schema, real: pd.DataFrame) -> DataTransformer:
    """Quantile/one-hot encoder fitted on the real rows (``schema`` already widened)."""
    return DataTransformer(schema).fit(real)


def encode(transformer: DataTransformer, df: pd.DataFrame) -> np.ndarray:
    """(N, D) float64 features with ties at their midpoint (deterministic, row-order free)."""
    ties = _MidpointTies()
    parts = []
    for span in transformer.spans:
        t = transformer.transforms[span.column]
        if span.role == "missing":
            isna = df[span.column].isna().to_numpy()
            parts.append(np.stack([~isna, isna], axis=1).astype(np.float64))
        elif isinstance(t, CategoricalTransform):
            parts.append(t.encode(df[span.column], ties).astype(np.float64))
        else:
            parts.append(t.encode(_filled_dates(df[span.column], t), ties).astype(np.float64)[:, None])
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))


def _filled_dates(s: pd.Series, t: ContinuousTransform) -> pd.Series:
    """Missing datetimes replaced by the median, as the transform does for other numeric kinds.

    ``datetime_to_seconds`` turns NaT into a huge negative number rather than NaN, so the transform
    cannot see the gap itself; the present/missing span still records it.
    """
    if t.schema.kind != "datetime" or not s.isna().any():
        return s
    dates = s if pd.api.types.is_datetime64_any_dtype(s) else pd.to_datetime(s, errors="coerce", format="mixed")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert(None)
    median = float(t.quantiles[len(t.quantiles) // 2]) if t.quantiles is not None else t.mean
    return dates.fillna(pd.Timestamp(median, unit="s"))
