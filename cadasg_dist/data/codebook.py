"""A public codebook: every column's kind, category set, bounds and identifier guess, in one file.

Privacy caveats first. What a codebook declares is treated as PUBLIC: a private run reads kinds,
category sets and bounds from it without paying for them (it becomes ``data.columns``, see
``as_overrides``). ``Codebook.detect`` reads them from the rows instead, so its result is a DRAFT:
its bounds are the table's exact extremes and its category sets the values present, both of which
can single out a person. The file it writes says so at the top; the data owner must confirm every
entry from documentation (a data dictionary, a form, a standard) before it is treated as public,
and should drop bounds the documentation does not give (a private run then releases them).

    >>> import pandas as pd
    >>> book = Codebook.detect(pd.DataFrame({"age": [30, 41, 57] * 20, "sex": ["F", "M", "F"] * 20}))
    >>> [(c.name, c.kind, c.categories) for c in book.columns]
    [('age', 'categorical', (30, 41, 57)), ('sex', 'categorical', ('F', 'M'))]
    >>> book.as_overrides()["sex"].categories
    ('F', 'M')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig, ColumnOverride, DataConfig, read_yaml_mapping
from cadasg_dist.data import codebook_check
from cadasg_dist.data.codebook_check import Problem, mostly_numbers
from cadasg_dist.data.codebook_entry import CodebookColumn
from cadasg_dist.data.io import write_text
from cadasg_dist.data.schema import guess_kind
from cadasg_dist.errors import ConfigError, InvalidDataError

__all__ = ["Codebook", "CodebookColumn", "Problem"]

HEADER = """\
# CADASG codebook: every column's kind, category set and bounds.
#
# DRAFT, READ FROM THE DATA{source}. Nothing below is public yet: the bounds are the table's own
# extremes and the category sets the values it holds, and either can single out a person. Before
# this file is treated as public (a private run reads it free of charge), the data owner must
# confirm EVERY entry from documentation (a data dictionary, a form, a coding standard): keep a
# category or a bound only where the documentation gives it, and delete bounds it does not give
# (a private run then releases them under its budget). `identifier` says why a column looks like
# an identifier; such columns are dropped (kind: identifier) unless you give them another kind.
# Check it against the data with: cadasg schema DATA --check THIS_FILE
"""


@dataclass(frozen=True)
class Codebook:
    """Per column (in table order): kind (continuous, integer, categorical, boolean, datetime,
    identifier, derived), category set, min/max bounds and an identifier guess. Plain data."""

    columns: tuple[CodebookColumn, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> CodebookColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    # --- reading the data: a draft --------------------------------------------------------------
    @classmethod
    def detect(cls, df: pd.DataFrame, *, max_categories: int = DataConfig.max_categories) -> Codebook:
        """A DRAFT read from ``df`` with the data layer's inference (``data.schema``): an
        identifier-like column is marked kind identifier with the reason, never refused."""
        if df.shape[0] == 0 or df.shape[1] == 0:
            raise InvalidDataError("the table has no rows")
        columns = [_detect_column(df[name], str(name), max_categories) for name in df.columns]
        return cls(columns=tuple(_with_derived(df, columns)))

    def check(self, df: pd.DataFrame, *, private: bool = False) -> list[Problem]:
        """Every problem of this codebook against ``df`` at once: columns on one side only, values
        outside a category set (a count; the values too unless ``private``), values outside the
        bounds (the share that would be clipped), values a numeric column cannot read, and kinds the
        values cannot hold. An empty list: none."""
        return codebook_check.check(self.columns, df, private=private)

    def warnings(self, df: pd.DataFrame, *, target: str | None = None, context: tuple[str, ...] = ()) -> list[str]:
        """What to look at before confirming a draft (``codebook_check.draft_warnings``)."""
        return codebook_check.draft_warnings(self.columns, df, target=target, context=tuple(context))

    # --- plain data and YAML ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"columns": {c.name: c.to_dict() for c in self.columns}}

    @classmethod
    def from_dict(cls, raw: Any) -> Codebook:
        """A codebook from plain data: ``{"columns": {name: {kind: ..., ...}}}``. Raises ``ConfigError``."""
        if not isinstance(raw, dict) or set(raw) != {"columns"} or not isinstance(raw["columns"], dict):
            raise ConfigError("a codebook holds one key, columns: a mapping of column name to "
                              "{kind: ..., categories: [...], min: ..., max: ...}")
        return cls(columns=tuple(CodebookColumn.from_dict(str(name), entry) for name, entry in raw["columns"].items()))

    def to_yaml_text(self, source: str | None = None) -> str:
        """The YAML file: the draft header (naming ``source``, the data read), then one line per column."""
        header = HEADER.format(source=f" ({source})" if source else "")
        return header + "columns:\n" + "".join(f"  {c.yaml_line()}\n" for c in self.columns)

    def to_yaml(self, path: str | Path, *, source: str | None = None) -> Path:
        """Write the YAML file atomically (a failure leaves no partial file)."""
        return write_text(path, self.to_yaml_text(source))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Codebook:
        raw = read_yaml_mapping(path, "codebook")
        try:
            return cls.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"codebook {Path(path)}: {str(exc).removeprefix('codebook ')}") from None

    @classmethod
    def load(cls, codebook: Codebook | str | Path) -> Codebook:
        """``codebook`` itself, or the one in a YAML file."""
        return codebook if isinstance(codebook, Codebook) else cls.from_yaml(codebook)

    # --- what the config understands ------------------------------------------------------------
    def as_overrides(self) -> dict[str, ColumnOverride]:
        """The ``data.columns`` mapping this codebook declares."""
        return {c.name: c.override() for c in self.columns}

    def apply_to(self, config: CADASGConfig) -> CADASGConfig:
        """``config`` with this codebook's declarations in ``data.columns``; the config's own
        entries win (field by field where the kinds agree, whole where the config names another kind)."""
        merged = self.as_overrides()
        for name, own in config.data.columns.items():
            base = merged.get(name)
            if base is None or (own.kind is not None and own.kind != base.kind):
                merged[name] = own
                continue
            fields = {f.name: getattr(own, f.name) for f in dataclasses.fields(own) if getattr(own, f.name) is not None}
            merged[name] = dataclasses.replace(base, **fields)
        return dataclasses.replace(config, data=dataclasses.replace(config.data, columns=merged))


def _detect_column(s: pd.Series, name: str, max_categories: int) -> CodebookColumn:
    present = s.dropna()
    if present.empty:
        return CodebookColumn(name, "identifier", identifier="it has no values: nothing to model")
    if mostly_numbers(present):  # "n/a" among numbers: the column is numeric (draft_warnings says so)
        present = pd.to_numeric(present, errors="coerce").dropna()
    kind, why = guess_kind(present, name, len(s), max_categories)
    if why is not None:
        return CodebookColumn(name, "identifier", identifier=why)
    if kind == "boolean":
        return CodebookColumn(name, kind, categories=(False, True))
    if kind == "categorical":
        return CodebookColumn(name, kind, categories=tuple(_sorted(present.unique())))
    if kind == "datetime":
        stamps = pd.to_datetime(present, errors="coerce", format="mixed") if not pd.api.types.is_datetime64_any_dtype(
            present) else present
        stamps = stamps.dropna()
        return CodebookColumn(name, kind, min=_iso(stamps.min()), max=_iso(stamps.max()))
    values = pd.to_numeric(present).to_numpy(dtype=float)
    lo, hi = float(values.min()), float(values.max())
    if kind == "integer":
        return CodebookColumn(name, kind, min=int(lo), max=int(hi))
    return CodebookColumn(name, kind, min=lo, max=hi)


# A 0/1 column is proposed as derived only from a source with at most this many categories.
DERIVED_SOURCE_LEVELS = 50


def _with_derived(df: pd.DataFrame, columns: list[CodebookColumn]) -> list[CodebookColumn]:
    """Propose ``kind: derived`` for a 0/1 (or boolean) column that equals ``(other == v)`` on every
    row, such as one-hot copies of a category (rwm5yr's ``edlevel1..4`` of ``edlevel``): modelled as
    columns of their own they cost a private run budget and can contradict their source. A draft,
    like the rest: the owner confirms it."""
    by_name = {c.name: c for c in columns}
    sources = [c for c in columns if c.kind == "categorical" and c.categories is not None
               and 2 < len(c.categories) <= DERIVED_SOURCE_LEVELS and not df[c.name].isna().any()]
    out = []
    for col in columns:
        s = df[col.name]
        binary = col.kind in ("categorical", "boolean") and set(col.categories or ()) <= {0, 1}
        found = None
        if binary and not s.isna().any():
            flags = s.astype(int).to_numpy()
            found = next(((src.name, v) for src in sources if src.name != col.name
                          for v in src.categories if np.array_equal((df[src.name] == v).to_numpy(), flags)), None)
        out.append(col if found is None else dataclasses.replace(
            by_name[col.name], kind="derived", categories=None, of=found[0], equals=found[1]))
    return out


def _iso(stamp: pd.Timestamp) -> str:
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()


def _sorted(values: Any) -> list[Any]:
    out = [v.item() if isinstance(v, np.generic) else v for v in values]
    out = [int(v) if isinstance(v, float) and v.is_integer() else v for v in out]
    try:
        return sorted(out)
    except TypeError:
        return sorted(out, key=str)
