"""Warnings when constraints are built: rules the training rows break, and band contexts left untied.

A context column whose labels are bands of a numeric feature (an ``age_band`` next to ``age``) gives
rows whose feature falls outside their band unless a ``band`` constraint ties the two: the model
learns the feature and the label separately. ``warn_untied_bands`` says so in one logged line.

Privacy: without ``data`` (every private run) only public labels and names are read. With the
table (a non-private fit) the checks read it: counts of rows, never a value in a message.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.constraints.base import Rule
from cadasg_dist.constraints.numeric import Band
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.context.labels import parse_interval
from cadasg_dist.data.schema import Schema

log = logging.getLogger(__name__)


def check_training_rows(rules: list[Rule], data: pd.DataFrame, first: int = 0) -> None:
    """Warn, per rule, when training rows break it (a non-private fit only): sampling will enforce it anyway."""
    for i, rule in enumerate(rules):
        if not set(rule.columns) <= set(data.columns):
            continue
        broken = int(rule.violated(data.reset_index(drop=True)).sum())
        if broken:
            log.warning("constraints[%d] (%s) does not hold on %d of %d training rows; every synthetic row will "
                        "satisfy it", first + i, rule.describe(), broken, len(data))


def warn_untied_bands(schema: Schema, extractor: RuleContextExtractor, rules: list[Rule],
                      data: pd.DataFrame | None) -> None:
    """Warn once per categorical context column that looks like bands of a numeric column and that no
    ``band`` constraint ties: its labels read as intervals, or (with the table) each label's values
    of a numeric column fill disjoint ranges."""
    tied = {rule.context for rule in rules if isinstance(rule, Band)}
    numeric = [c.name for c in schema.columns
               if c.kind in ("continuous", "integer") and c.name not in extractor.columns]
    for column in extractor.categorical_columns:
        if column in tied or not numeric:
            continue
        j = extractor.columns.index(column)
        labels = [k[j] for k in extractor.domain if k[j] is not None]
        feature = _banded_feature(column, labels, numeric, data)
        if feature is not None:
            log.warning("context column %r looks like bands of %r, but no constraint ties them, so synthetic %s may "
                        "fall outside its band; declare {kind: band, column: %s, context: %s} in constraints",
                        column, feature, feature, feature, column)


def _banded_feature(column: str, labels: list[Any], numeric: list[str], data: pd.DataFrame | None) -> str | None:
    """The numeric column ``column`` looks like bands of, or None."""
    if len(set(labels)) < 2:
        return None
    intervals = [parse_interval(str(lab)) for lab in labels]
    named = [n for n in numeric if re.search(rf"(^|[^a-z0-9]){re.escape(n.lower())}", column.lower())]
    if all(iv is not None for iv in intervals):
        if named:
            return named[0]
        if data is not None:  # the feature most of whose values lie in their row's band
            return _best_fit(column, intervals, labels, numeric, data)
        return numeric[0] if len(numeric) == 1 else None
    if data is None:
        return None
    return next((n for n in named + [n for n in numeric if n not in named] if _disjoint(data, column, n)), None)


def _best_fit(column: str, intervals: list[Any], labels: list[Any], numeric: list[str],
              data: pd.DataFrame) -> str | None:
    keyed = {str(lab): iv for lab, iv in zip(labels, intervals)}
    label = data[column].astype(str)
    for name in numeric:
        x = pd.to_numeric(data[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        inside = np.zeros(len(data), dtype=bool)
        for lab, iv in keyed.items():
            rows = (label == lab).to_numpy()
            inside[rows] = iv.contains(x[rows])
        if inside.mean() >= 0.95:
            return name
    return None


def _disjoint(data: pd.DataFrame, column: str, name: str) -> bool:
    """Whether each label's values of ``name`` fill ranges that do not overlap (two labels at least)."""
    x = pd.to_numeric(data[name], errors="coerce")
    spans = x.groupby(data[column], dropna=True).agg(["min", "max"]).dropna().sort_values("min")
    if len(spans) < 2:
        return False
    return bool((spans["min"].to_numpy()[1:] > spans["max"].to_numpy()[:-1]).all())
