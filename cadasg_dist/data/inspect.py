"""Warnings about an inferred schema: surprises a user should hear of before training on it.

Privacy caveat first: these read the table's values (and ``schema_warnings`` quotes a few text
values), so they are for a non-private run or for the data owner's own terminal only; a private
run's schema comes from declarations and DP releases and is never inspected this way.

``infer_schema`` reads a table as it is; three things it does then surprise people:

* a numeric column with a few text values ("twenty", "n/a") becomes a categorical of as many levels
  as it has distinct numbers;
* a column that is nearly unique per row (a name, a code, a record number) is modelled as a huge
  categorical or as a number (``infer_schema`` refuses only the plainest identifiers);
* context columns with more levels than the rows support give contexts of a handful of rows each.

``cadasg schema`` says the same of a draft codebook (``Codebook.warnings``); these are the same
warnings for the schema ``cadasg train`` infers.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from cadasg_dist.data.codebook_check import MIN_ROWS_PER_CONTEXT, mostly_numbers
from cadasg_dist.data.schema import Schema

# A text categorical with at least this share of distinct values per row looks like an identifier.
IDENTIFIER_SHARE = 0.5
# ... on a table of at least this many rows (a tiny table has few repeats anyway).
IDENTIFIER_MIN_ROWS = 50
# Text values quoted in a warning, at most.
EXAMPLES = 3


def schema_warnings(df: pd.DataFrame, schema: Schema, *, context: Sequence[str] = (),
                    n_contexts: int | None = None) -> list[str]:
    """One line per surprise in ``schema`` (as ``infer_schema`` read ``df``): numeric columns with
    a few text values, identifier-like categoricals, and ``n_contexts`` contexts (from ``context``
    columns) for too few rows. An empty list: nothing to warn of."""
    out: list[str] = []
    for col in schema.columns:
        if col.name not in df.columns:
            continue
        if col.kind in ("integer", "continuous") and _unique_integers(df[col.name]):
            out.append(f"{col.name}: a different whole number on every row looks like an identifier (a record "
                       f"number), modelled as a number; declare data.columns.{col.name}.kind: identifier to drop it")
        if col.kind != "categorical":
            continue
        present = df[col.name].dropna()
        levels = len(col.categories or ())
        if mostly_numbers(present):
            out.append(_numeric_with_text(col.name, present, levels))
        elif (col.name not in context and len(df) >= IDENTIFIER_MIN_ROWS
              and present.nunique() >= IDENTIFIER_SHARE * len(df) and not pd.api.types.is_numeric_dtype(present)):
            out.append(f"{col.name}: {present.nunique()} distinct values in {len(df)} rows looks like an identifier "
                       f"(a name or a code), modelled as a {levels}-level categorical; declare "
                       f"data.columns.{col.name}.kind: identifier to drop it")
    if context and n_contexts:
        out.extend(context_warnings(list(context), n_contexts, len(df)))
    return out


def _unique_integers(s: pd.Series) -> bool:
    present = s.dropna()
    if len(s) < IDENTIFIER_MIN_ROWS or len(present) < len(s) or not pd.api.types.is_numeric_dtype(present):
        return False
    return bool(present.nunique() == len(present) and (present % 1 == 0).all())


def _numeric_with_text(name: str, present: pd.Series, levels: int) -> str:
    parsed = pd.to_numeric(present, errors="coerce")
    text = present[parsed.isna()]
    shown = ", ".join(repr(str(v)) for v in text.drop_duplicates().head(EXAMPLES))
    more = ", ..." if text.nunique() > EXAMPLES else ""
    return (f"{name}: numbers but for {len(text)} text value{'s' if len(text) != 1 else ''} ({shown}{more}), so it "
            f"is modelled as a {levels}-level categorical; make those values missing, or declare "
            f"data.columns.{name}.kind: integer or continuous")


def context_warnings(context: list[str], n_contexts: int, n_rows: int) -> list[str]:
    """A warning when ``n_contexts`` contexts leave fewer than ``MIN_ROWS_PER_CONTEXT`` rows each."""
    if n_rows / n_contexts >= MIN_ROWS_PER_CONTEXT:
        return []
    return [f"context {', '.join(context)}: {n_contexts} contexts for {n_rows} rows (about {n_rows / n_contexts:.0f} "
            f"each); a context needs some {MIN_ROWS_PER_CONTEXT} rows or more: use fewer or coarser context "
            "columns (context.bands for numbers)"]
