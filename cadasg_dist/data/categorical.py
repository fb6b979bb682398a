"""Categorical or boolean column <-> one softmax block, and the category look-up every layer shares.

A column's categories come from the schema (declared, or inferred from the rows); a last slot
stands for missing values when the column has any. ``category_key`` (``data.values``, re-exported
here) is the one normalisation of a value for look-ups (``1``, ``1.0`` and ``np.int64(1)`` are one
category); every layer that matches values to categories calls it, so a value is the same category
wherever it is counted, and ``CategoryMatcher`` adds the spellings a YAML declaration may use.

Privacy: ``CategoricalTransform.fit`` counts the code shares on the real rows (a raw statistic);
the private path sets ``frequencies`` from its DP release instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.data.schema import ColumnSchema
from cadasg_dist.data.values import CategoryMatcher, category_key, is_missing
from cadasg_dist.errors import InvalidDataError

__all__ = ["CategoricalTransform", "category_key"]


class CategoricalTransform:
    """Categorical or boolean column <-> one softmax block (a last slot for missing, if any)."""

    def __init__(self, schema: ColumnSchema) -> None:
        self.schema = schema
        self.categories = list(schema.categories or ())
        # Share of each code (the categories, then the missing slot if any), for the sampler's
        # marginal calibration (cadasg_dist/model/calibration.py). Non-private: counted by ``fit``;
        # private: the noisy histogram of the ``preprocess/histograms`` release. None: not known.
        self.frequencies: list[float] | None = None

    @property
    def width(self) -> int:
        return len(self.categories) + int(self.schema.has_missing)

    def fit(self, s: pd.Series) -> None:
        """Categories come from the schema (declared or inferred); the code shares are counted
        (a raw statistic: the private path sets ``frequencies`` from its DP release instead)."""
        try:
            codes = self.codes(s)
        except InvalidDataError:  # a value outside the declared set: encoding will say so
            return
        self.frequencies = (np.bincount(codes, minlength=self.width) / max(len(codes), 1)).tolist()

    def codes(self, s: pd.Series) -> np.ndarray:
        """Index of each value in the category list; the missing slot for NaN. Unknown values raise."""
        matcher = CategoryMatcher(self.categories)
        missing_code = len(self.categories)
        out = np.empty(len(s), dtype=np.int64)
        for i, v in enumerate(s.tolist()):
            if is_missing(v):
                if not self.schema.has_missing:
                    raise InvalidDataError(f"column {self.schema.name!r} has a missing value, unseen in training")
                out[i] = missing_code
                continue
            code = matcher.index(v)
            if code is None:
                raise InvalidDataError(f"column {self.schema.name!r} has value {v!r}, outside its category "
                                       f"set {self.categories[:20]}")
            out[i] = code
        return out

    def encode(self, s: pd.Series, rng: np.random.Generator) -> np.ndarray:
        onehot = np.zeros((len(s), self.width), dtype=np.float32)
        onehot[np.arange(len(s)), self.codes(s)] = 1.0
        return onehot

    def decode_codes(self, codes: np.ndarray) -> pd.Series:
        """The categories of ``codes`` in the column's dtype; text stays object (no string inference)."""
        values = np.array(self.categories + [None], dtype=object)[codes]
        dtype = self.schema.dtype
        if dtype == "object" or dtype.startswith("str") or dtype == "category":
            return pd.Series(values, dtype=object)
        if not self.schema.has_missing and (dtype.startswith(("int", "float")) or dtype == "bool"):
            try:  # a typed array from the categories, without converting each object
                return pd.Series(np.array(self.categories, dtype=dtype)[codes])
            except (TypeError, ValueError):
                pass
        return _restore_dtype(pd.Series(values, dtype=object), self.schema)

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "frequencies": self.frequencies}

    def load_dict(self, d: dict[str, Any]) -> None:
        self.categories = list(d["categories"])
        freq = d.get("frequencies")
        self.frequencies = None if freq is None or len(freq) != self.width else [float(v) for v in freq]


def _restore_dtype(s: pd.Series, schema: ColumnSchema) -> pd.Series:
    dtype = schema.dtype
    try:
        if schema.has_missing and dtype.startswith("int"):
            return s.astype("Int64")
        if dtype == "bool" and schema.has_missing:
            return s.astype("boolean")
        if dtype == "object" or dtype.startswith("str") or dtype == "category":
            return s.astype(object)
        return s.astype(dtype)
    except (TypeError, ValueError):
        return s

