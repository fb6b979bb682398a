"""Declared constraints (``CADASGConfig.constraints``) checked against the schema and made into rules.

Every error names the entry (``constraints[i]``), the bad value and the fix, in one line. Values a
message may show are public: column names, declared or released categories and context labels,
never a row.

Privacy: in a private run nothing here reads the table: combinations must be declared, band
labels come from the context domain or the declared categories. Without DP, ``combinations``
without ``allowed`` reads the combinations seen in the table, and two checks read it for a
warning (``checks.py``): how many training rows break a rule, and whether a context looks like
bands of a numeric column that no band constraint ties.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cadasg_dist.config import CADASGConfig, ConstraintConfig, to_plain
from cadasg_dist.constraints.base import Grid, Rule, label_key
from cadasg_dist.constraints.checks import check_training_rows, warn_untied_bands
from cadasg_dist.constraints.combinations import Combinations
from cadasg_dist.constraints.enforce import ConstraintSet
from cadasg_dist.constraints.numeric import Band, Inequality, Range
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.context.labels import Interval, parse_interval, same_bounds, same_interval
from cadasg_dist.data.schema import ColumnSchema, Schema
from cadasg_dist.errors import ConfigError

NUMERIC = ("continuous", "integer")
CATEGORICAL = ("categorical", "boolean")


def with_entries(config: CADASGConfig, entries: Any, current: ConstraintSet, schema: Schema | None,
                 extractor: RuleContextExtractor | None) -> tuple[CADASGConfig, ConstraintSet | None]:
    """``config`` with ``entries`` (``ConstraintConfig``s or dicts of their keys) appended, and the
    rules in force: ``current``'s plus the new ones when the model is fitted (``schema`` given), else
    None (built at fit). Raises before anything changes: ``ConfigError`` naming the bad entry."""
    listed = [*to_plain(config.constraints), *(to_plain(e) if isinstance(e, ConstraintConfig) else dict(e)
                                               for e in entries)]
    out = config.replace(constraints=listed)  # checks each entry
    if schema is None or extractor is None:
        return out, None
    first = len(config.constraints)
    added = build_constraints(out, schema, extractor, entries=out.constraints[first:], first=first)
    return out, ConstraintSet(current.rules + added.rules, tuple(sorted(added.fixed)))


def build_constraints(config: CADASGConfig, schema: Schema, extractor: RuleContextExtractor,
                      data: pd.DataFrame | None = None, entries: tuple[ConstraintConfig, ...] | None = None,
                      first: int = 0) -> ConstraintSet:
    """The rules of ``entries`` (default: the config's), numbered from ``first`` in messages.

    ``data``: the table of a non-private fit (None in a private run, or when it is not at hand);
    only then may a ``combinations`` entry leave ``allowed`` out, and only then do the warnings
    read rows. Raises ``ConfigError`` for an entry that does not fit the table."""
    entries = config.constraints if entries is None else entries
    if config.private:
        data = None  # never read in a private run, whatever the caller passed
    fixed = set(extractor.categorical_columns)
    if config.target is not None and config.target in schema.names and schema[config.target].kind in CATEGORICAL:
        fixed.add(config.target)
    maker = _Maker(schema, extractor, frozenset(fixed), data, config.private)
    rules = [maker.rule(first + i, entry) for i, entry in enumerate(entries)]
    out = ConstraintSet(rules, tuple(sorted(fixed)))
    if entries is config.constraints:
        warn_untied_bands(schema, extractor, rules, data)
    if data is not None:
        check_training_rows(rules, data, first)
    return out


class _Maker:
    def __init__(self, schema: Schema, extractor: RuleContextExtractor, fixed: frozenset[str],
                 data: pd.DataFrame | None, private: bool) -> None:
        self.schema, self.extractor, self.fixed, self.data, self.private = schema, extractor, fixed, data, private

    def rule(self, i: int, e: ConstraintConfig) -> Rule:
        problem = e.problem()
        if problem is not None:
            raise ConfigError(f"constraints[{i}]: {problem}")
        if e.kind == "range":
            col = self.column(i, e.column, "a continuous, integer or numeric category column", numeric_set=True)
            rule = Range(col.name, e.low, e.high, e.inclusive or "both", _grid(col))
            if not rule.grid.holds_some(rule.interval):
                raise ConfigError(f"constraints[{i}]: no value of {col.name!r} lies in {rule.interval.text()}")
            return rule
        if e.kind == "inequality":
            a, b = (self.column(i, name, "a continuous, integer or datetime column", dates=True) for name in (e.a, e.b))
            if (a.kind == "datetime") != (b.kind == "datetime"):
                raise ConfigError(f"constraints[{i}]: {a.name!r} and {b.name!r} must both be dates or both numbers")
            return Inequality(a.name, b.name, e.strict, e.offset, _grid(a), _grid(b), datetime=a.kind == "datetime")
        if e.kind == "band":
            return self.band(i, e)
        return self.combinations(i, e)

    def column(self, i: int, name: str | None, what: str, *, numeric_set: bool = False,
               dates: bool = False) -> ColumnSchema:
        col = self.modelled(i, name)
        ok = col.kind in NUMERIC or (dates and col.kind == "datetime") or (numeric_set and _numeric_set(col))
        if not ok:
            raise ConfigError(f"constraints[{i}]: {col.name!r} is a {col.kind} column; this rule needs {what}")
        if col.name in self.fixed:
            raise ConfigError(f"constraints[{i}]: {col.name!r} is set by the context or class of each row; "
                              "choose the contexts to sample instead (sample(context=...))")
        return col

    def modelled(self, i: int, name: str | None) -> ColumnSchema:
        if name in self.schema.names:
            return self.schema[name]
        if name in self.schema.dropped:
            raise ConfigError(f"constraints[{i}]: column {name!r} is an identifier, never generated")
        source = next((d.of for d in self.schema.derived if d.name == name), None)
        if source is not None:
            raise ConfigError(f"constraints[{i}]: column {name!r} is derived from {source!r}; constrain {source!r}")
        raise ConfigError(f"constraints[{i}]: unknown column {name!r}; columns: {', '.join(self.schema.names)}")

    def labels(self, column: str) -> list[Any]:
        """The public labels of a categorical column: its context labels, else its categories."""
        if column in self.extractor.columns:
            j = self.extractor.columns.index(column)
            return list(dict.fromkeys(k[j] for k in self.extractor.domain if k[j] is not None))
        return list(self.schema[column].categories or ())

    def band(self, i: int, e: ConstraintConfig) -> Band:
        col = self.column(i, e.column, "a continuous or integer column", numeric_set=True)
        ctx = self.modelled(i, e.context)
        if ctx.kind not in CATEGORICAL:
            raise ConfigError(f"constraints[{i}]: the band labels' column {ctx.name!r} must be categorical, got "
                              f"{ctx.kind} (a numeric context is banded by context.bands already)")
        labels = self.labels(ctx.name)
        declared = {lab: _declared_band(i, lab, pair, labels, ctx.name, e.inclusive or "left")
                    for lab, pair in (e.bands or {}).items()}
        bands: dict[str, Interval] = {}
        for label in labels:
            iv = next((iv for (hit, iv) in declared.values() if hit == label), None) or parse_interval(str(label))
            if iv is None:
                raise ConfigError(f"constraints[{i}]: label {label!r} of {ctx.name!r} names no interval; give its "
                                  f"band: bands: {{{str(label)!r}: [low, high]}}")
            if not _grid(col).holds_some(iv):
                raise ConfigError(f"constraints[{i}]: band {iv.text()} of label {label!r} holds no value of "
                                  f"{col.name!r}")
            bands[label_key(label)] = iv
        return Band(col.name, ctx.name, bands, _grid(col))

    def combinations(self, i: int, e: ConstraintConfig) -> Combinations:
        cols = [self.modelled(i, name) for name in e.columns]
        for col in cols:
            if col.kind not in CATEGORICAL:
                raise ConfigError(f"constraints[{i}]: {col.name!r} is a {col.kind} column; combinations need "
                                  "categorical columns (a range or band constraint bounds a number)")
        if e.allowed is None:
            if self.private:
                raise ConfigError(f"constraints[{i}]: a private run never reads the combinations from the table: "
                                  f"declare them (allowed: [[...], ...] over {', '.join(e.columns)})")
            if self.data is None:
                raise ConfigError(f"constraints[{i}]: declare the allowed combinations of {', '.join(e.columns)}; "
                                  "they are read from the table only by a fit that has it at hand (a non-private "
                                  "CADASG.fit)")
            rule = Combinations(e.columns, _seen(self.data, cols), source="data")
        else:
            rule = Combinations(e.columns, [tuple(_category(i, col, v) for col, v in zip(cols, row))
                                            for row in e.allowed])
        self.check_contexts(i, rule)
        return rule

    def check_contexts(self, i: int, rule: Combinations) -> None:
        """Every context's labels must appear in an allowed combination, or its rows could not keep them."""
        held = [(j, c) for j, c in enumerate(rule.columns) if c in self.extractor.categorical_columns]
        if not held:
            return
        allowed = {tuple(label_key(row[j]) for j, _ in held) for row in rule.allowed}
        for key in self.extractor.domain:
            labels = tuple(key[self.extractor.columns.index(c)] for _, c in held)
            if None not in labels and tuple(label_key(v) for v in labels) not in allowed:
                shown = ", ".join(f"{c}={v}" for (_, c), v in zip(held, labels))
                raise ConfigError(f"constraints[{i}]: the context {shown} is in no allowed combination; allow one, "
                                  "or leave that value out of the table's contexts")


def _grid(col: ColumnSchema) -> Grid:
    if col.kind in ("integer", "datetime"):  # datetimes: int64 nanoseconds
        return Grid("int")
    if col.kind == "continuous":
        return Grid("float", "float32" if col.dtype in ("float32", "Float32") else "float64")
    return Grid("set", values=tuple(float(v) for v in col.categories or ()))


def _numeric_set(col: ColumnSchema) -> bool:
    cats = col.categories or ()
    return col.kind == "categorical" and bool(cats) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in cats)


def _declared_band(i: int, key: str, pair: tuple[float, ...], labels: list[Any], column: str,
                   inclusive: str) -> tuple[Any, Interval]:
    """(the label a declared band key names, its interval): the key as the label is spelt, or the
    same interval spelt otherwise (``"[40,55)"`` for ``"[40, 55)"``)."""
    hits = [lab for lab in labels if label_key(lab) == label_key(key)] or \
        [lab for lab in labels if same_interval(lab, key)] or [lab for lab in labels if same_bounds(lab, key)]
    if len(hits) != 1:
        shown = ", ".join(map(str, labels[:20])) + (" ..." if len(labels) > 20 else "")
        raise ConfigError(f"constraints[{i}]: bands key {key!r} is not a label of {column!r}; labels: {shown}")
    return hits[0], Interval.from_pair(pair, inclusive)


def _category(i: int, col: ColumnSchema, value: Any) -> Any:
    """A declared value as the column stores it (its category of the same spelling)."""
    if col.categories is None:
        return value
    match = next((c for c in col.categories if label_key(c) == label_key(value)), None)
    if match is None:
        shown = ", ".join(map(str, col.categories[:20])) + (" ..." if len(col.categories) > 20 else "")
        raise ConfigError(f"constraints[{i}]: allowed value {value!r} is not a category of {col.name!r}; "
                          f"categories: {shown}")
    return match


def _seen(data: pd.DataFrame, cols: list[ColumnSchema]) -> list[tuple[Any, ...]]:
    """The combinations present in the table (rows with a missing value aside), as the columns store
    them, in a canonical order. Non-private fits only."""
    names = [c.name for c in cols]
    rows = data[names].dropna().drop_duplicates().itertuples(index=False, name=None)
    seen = {tuple(label_key(v) for v in row): row for row in rows}
    lookup = [{label_key(c): c for c in (col.categories or ())} for col in cols]
    out = [tuple(lookup[j].get(k, _plain(v)) for j, (k, v) in enumerate(zip(key, row))) for key, row in seen.items()]
    return sorted(out, key=lambda row: tuple(label_key(v) for v in row))


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
