"""Reversible column transforms between a table and the model's feature matrix.

Layout: every column becomes one or more *spans* of the feature matrix, described by frozen
``SpanInfo`` records. A numeric column is one ``continuous`` span (``data.continuous``: a Gaussian
quantile map by default), plus a 2-wide ``softmax`` span [other, atom] when one value holds a large
share of its rows and a 2-wide ``softmax`` span [present, missing] when it has missing values; a
categorical or boolean column is one ``softmax`` span over its categories (``data.categorical``,
plus a last "missing" slot when it has missing values). The model emits raw values for continuous
spans and logits for softmax spans; ``decode`` samples the categories.

Privacy: ``DataTransformer.fit`` reads bounds, quantiles and category sets from the real rows
unless the schema says they were declared; ``Schema.private_statistics`` lists what was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.data.categorical import CategoricalTransform
from cadasg_dist.data.continuous import ContinuousTransform
from cadasg_dist.data.schema import ColumnSchema, Schema
from cadasg_dist.errors import InvalidDataError

# The column transforms are imported from here by the model, evaluation and privacy layers.
__all__ = ["CategoricalTransform", "ContinuousTransform", "DataTransformer", "SpanInfo", "sample_categories"]


@dataclass(frozen=True)
class SpanInfo:
    column: str
    kind: str  # "continuous" or "softmax"
    start: int
    width: int
    # "value"; "atom" (a numeric column's [other, point-mass] indicator); "missing" ([present, missing])
    role: str = "value"

    @property
    def stop(self) -> int:
        return self.start + self.width


class DataTransformer:
    """Table <-> feature matrix, over all modelled columns except those in ``exclude``.

    ``exclude`` names context columns that are fixed by the context key (filled in by the sampler,
    not generated).
    """

    def __init__(self, schema: Schema, encoding: str = "quantile", n_quantiles: int = 128,
                 exclude: tuple[str, ...] = (), atom_share: float = 0.05) -> None:
        self.schema = schema
        self.exclude = tuple(exclude)
        self.transforms: dict[str, ContinuousTransform | CategoricalTransform] = {}
        # Per class of the target, a histogram of every other column, for the per-class calibration
        # (cadasg_dist/model/calibration.py): {"std": noise sd per cell (0 = exact), "counts":
        # {column: [[count per cell] per class]}}, or None. Set by CADASG.prepare or, released under
        # DP, by private.releases.release_group_marginals.
        self.class_marginals: dict[str, Any] | None = None
        # The same per context (cadasg_dist/model/calibration.py ``context_counts``: {"std", "counts":
        # {column: [[count per cell] per context]}}), for the per-context calibration, or None.
        self.context_marginals: dict[str, Any] | None = None
        for col in schema.columns:
            if col.name in self.exclude:
                continue
            if col.kind in ("categorical", "boolean"):
                self.transforms[col.name] = CategoricalTransform(col)
            else:
                self.transforms[col.name] = ContinuousTransform(col, encoding, n_quantiles, atom_share)
        self.spans = self._layout()

    def relayout(self) -> None:
        """Lay out the spans again after a transform's fields were set (an atom adds a span)."""
        self.spans = self._layout()

    def _layout(self) -> tuple[SpanInfo, ...]:
        spans, start = [], 0
        for name, t in self.transforms.items():
            if isinstance(t, CategoricalTransform):
                spans.append(SpanInfo(name, "softmax", start, t.width))
                start += t.width
            else:
                spans.append(SpanInfo(name, "continuous", start, 1))
                start += 1
                if t.atom is not None:
                    spans.append(SpanInfo(name, "softmax", start, 2, role="atom"))
                    start += 2
                if t.schema.has_missing:
                    spans.append(SpanInfo(name, "softmax", start, 2, role="missing"))
                    start += 2
        return tuple(spans)

    @property
    def output_dim(self) -> int:
        return self.spans[-1].stop if self.spans else 0

    @property
    def columns(self) -> list[str]:
        return list(self.transforms)

    def fit(self, df: pd.DataFrame) -> DataTransformer:
        """Fit every transform. Reads private statistics unless the schema declares them."""
        for name, t in self.transforms.items():
            t.fit(df[name])
        self.spans = self._layout()  # atoms found by fit add spans
        return self

    def encode(self, df: pd.DataFrame, seed: int = 0) -> np.ndarray:
        """(N, D) float32 feature matrix. ``seed`` drives the spreading of ties (reproducible)."""
        rng = np.random.default_rng(seed)
        missing_cols = [c for c in self.transforms if c not in df.columns]
        if missing_cols:
            raise InvalidDataError(f"the table lacks column {missing_cols[0]!r} of the schema")
        parts = []
        for span in self.spans:
            t = self.transforms[span.column]
            if span.role == "missing":
                isna = df[span.column].isna().to_numpy()
                parts.append(np.stack([~isna, isna], axis=1).astype(np.float32))
            elif span.role == "atom":
                at = t.is_atom(df[span.column])
                parts.append(np.stack([~at, at], axis=1).astype(np.float32))
            elif isinstance(t, CategoricalTransform):
                parts.append(t.encode(df[span.column], rng))
            else:
                parts.append(t.encode(df[span.column], rng)[:, None])
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0), np.float32)

    def decode(self, features: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        """Feature matrix -> table. Softmax spans hold probabilities; categories are *sampled*
        from them (one-hot rows decode deterministically), one ``rng.random(n)`` per softmax span in
        span order. Vectorised: the matrix is read once as contiguous columns, so each span's work
        is a few passes over n contiguous values (no per-row Python, no strided reads)."""
        columns = np.ascontiguousarray(features.T)  # (D, N): a span's values are contiguous
        out: dict[str, Any] = {}
        missing_mask: dict[str, np.ndarray] = {}
        atom_mask: dict[str, np.ndarray] = {}
        for span in self.spans:
            t = self.transforms[span.column]
            if span.kind == "softmax":
                codes = _draw_codes(columns[span.start:span.stop], rng)
                if span.role == "missing":
                    missing_mask[span.column] = codes == 1
                elif span.role == "atom":
                    atom_mask[span.column] = codes == 1
                else:
                    out[span.column] = t.decode_codes(codes)
            else:
                out[span.column] = t.decode(columns[span.start])
        frame = {}
        for name, t in self.transforms.items():
            values = out[name]
            if isinstance(t, ContinuousTransform):
                if name in atom_mask:
                    values = np.where(atom_mask[name], t.atom, values)
                values = self._numeric_column(values, t.schema, missing_mask.get(name))
            frame[name] = values
        return pd.DataFrame(frame, copy=False)

    @staticmethod
    def _numeric_column(x: np.ndarray, schema: ColumnSchema, missing: np.ndarray | None) -> pd.Series:
        if schema.kind == "datetime":
            s = pd.Series(pd.to_datetime(np.round(x * 1e9).astype("int64")))
        elif schema.kind == "integer":
            s = pd.Series(x.astype(np.int64))
            if missing is not None:
                s = s.astype("Int64")
        else:
            s = pd.Series(x)
        if missing is not None:
            s = s.mask(missing)
        if schema.kind == "continuous" and schema.dtype.startswith("float"):
            s = s.astype(schema.dtype)
        return s

    def to_dict(self) -> dict[str, Any]:
        first = next((t for t in self.transforms.values() if isinstance(t, ContinuousTransform)), None)
        return {
            "exclude": list(self.exclude),
            "encoding": first.encoding if first else "quantile",
            "n_quantiles": first.n_quantiles if first else 128,
            "atom_share": first.atom_share if first else 0.05,
            "transforms": {name: t.to_dict() for name, t in self.transforms.items()},
            "class_marginals": self.class_marginals,
            "context_marginals": self.context_marginals,
        }

    @classmethod
    def from_dict(cls, schema: Schema, d: dict[str, Any]) -> DataTransformer:
        dt = cls(schema, d["encoding"], int(d["n_quantiles"]), tuple(d["exclude"]), float(d.get("atom_share", 0.05)))
        for name, t in dt.transforms.items():
            t.load_dict(d["transforms"][name])
        dt.class_marginals = d.get("class_marginals")
        dt.context_marginals = d.get("context_marginals")
        dt.spans = dt._layout()
        return dt


def sample_categories(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one index per row from row-wise probabilities (vectorised inverse-CDF sampling)."""
    return _draw_codes(np.ascontiguousarray(probs.T), rng)


def _draw_codes(columns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row from probabilities given as columns (W, N): inverse-CDF sampling with
    u ~ U(0, 1) scaled by the row's total, the CDF accumulated column by column (left to right,
    in the probabilities' precision, as ``np.cumsum`` does)."""
    u = rng.random(columns.shape[1])
    if columns.shape[0] == 1:
        return np.zeros(columns.shape[1], dtype=np.int64)
    total = columns[0].copy()
    for row in columns[1:]:
        total += row
    target = u * total
    acc = columns[0].copy()
    codes = np.zeros(columns.shape[1], dtype=np.int64)
    for row in columns[1:]:
        codes += acc < target
        acc += row
    return codes
