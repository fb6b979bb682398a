"""Shared table loading, per-table specs and the deterministic 80/20 split.

This module is imported both by the SDV baselines (``bench/baselines.py``, run in the
separate ``.venv-bench``) and by our own benchmark (run in the main ``.venv``). It must
therefore depend on nothing but numpy and pandas (no SDV, no torch) and behave the same
under pandas 2.x and 3.x.

Usage::

    from bench.splits import TABLES, load_table, split
    df, spec = load_table("MedExp")
    train, test = split(df, seed=0)
    y = utility_target(test, spec)     # the label utility is computed on

The split is a pure function of ``(len(df), seed, test_fraction)``::

    perm = numpy.random.default_rng(seed).permutation(len(df))
    n_test = round(len(df) * 0.2); n_train = len(df) - n_test
    train = df.iloc[perm[:n_train]]; test = df.iloc[perm[n_train:]]   # shuffled order

(both then get a fresh RangeIndex; ``split_indices`` gives the positions). Everybody (our generator and every baseline)
must train on the same ``train`` and be scored on the same ``test``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "TABLES",
    "TABLE_ORDER",
    "TableSpec",
    "datasets_dir",
    "load_table",
    "split",
    "split_indices",
    "utility_target",
    "resolve_tables",
]

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TableSpec:
    """What the benchmark needs to know about one real table.

    target            column the downstream-utility model predicts (kept RAW in the data).
    task              "classification" or "regression" (of the utility target, see below).
    binarize_target   utility is computed on ``target > 0`` instead of the raw column
                      (the column itself is modelled and synthesised unchanged).
    positive_label    for a categorical classification target: the value counted as 1.
    contexts          natural context (conditioning / per-group evaluation) columns.
    minority_contexts column -> values whose rows are rare and worth watching separately.
    drop              columns removed before anything is modelled (identifiers).
    heavy_tail        target is heavy-tailed (report e.g. log-scale errors too).
    notes             free text.
    """

    name: str
    file: str
    target: str
    task: str
    contexts: tuple[str, ...]
    binarize_target: bool = False
    positive_label: str | None = None
    minority_contexts: dict[str, tuple] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    heavy_tail: bool = False
    notes: str = ""


# Ordered smallest-effort first; the baseline runner uses this order for --tables all
# (diamonds, the largest, last).
TABLES: dict[str, TableSpec] = {
    "MedExp": TableSpec(
        name="MedExp",
        file="MedExp.csv",
        target="med",
        task="regression",
        contexts=("health", "sex"),
        minority_contexts={"health": ("poor",)},
        heavy_tail=True,
        notes="med: medical expenses, heavy tail, ~23% exact zeros.",
    ),
    "SLID": TableSpec(
        name="SLID",
        file="SLID.csv",
        target="wages",
        task="regression",
        contexts=("sex", "language"),
        minority_contexts={"language": ("French",)},
        notes="Missing values: wages 44%, education 3%, language 2%. Utility on rows "
        "with a non-missing target.",
    ),
    "HI": TableSpec(
        name="HI",
        file="HI.csv",
        target="whi",
        task="classification",
        positive_label="yes",
        contexts=("region",),
        minority_contexts={"race": ("other", "black")},
        notes="whi: wife has own health insurance (yes/no). wght is a survey weight. "
        "region = natural federated silos.",
    ),
    "rwm5yr": TableSpec(
        name="rwm5yr",
        file="rwm5yr.csv",
        target="hospvis",
        task="classification",
        binarize_target=True,
        contexts=("year", "female"),
        drop=("id",),
        notes="hospvis kept raw (a count); utility is on hospvis > 0 (8.6% positive). "
        "id (the person) is dropped. edlevel1..4 are one-hot copies of edlevel.",
    ),
    "diamonds": TableSpec(
        name="diamonds",
        file="diamonds.csv",
        target="price",
        task="regression",
        contexts=("cut",),
        minority_contexts={"cut": ("Fair",)},
        notes="Largest table (53,940 rows).",
    ),
}

TABLE_ORDER: tuple[str, ...] = tuple(TABLES)

YES_NO = ["no", "yes"]
# Public domains (category sets) a private run needs declared, as a data owner would copy them from
# the tables' codebooks; bounds of numeric columns are left to the engine's DP releases.
DECLARED: dict[str, dict] = {
    "HI": {"hhi": {"categories": YES_NO}, "whi": {"categories": YES_NO}, "hhi2": {"categories": YES_NO},
           "hispanic": {"categories": YES_NO}, "race": {"categories": ["black", "other", "white"]},
           "region": {"categories": ["northcentral", "other", "south", "west"]},
           "education": {"categories": ["<9years", "9-11years", "12years", "13-15years", "16years", ">16years"]}},
    # (the person id is dropped above: rows are the privacy unit in the benchmarks)
    "rwm5yr": {"year": {"kind": "categorical", "categories": [1984, 1985, 1986, 1987, 1988]},
               "female": {"kind": "categorical", "categories": [0, 1]},
               "edlevel": {"kind": "categorical", "categories": [1, 2, 3, 4]},
               **{c: {"kind": "categorical", "categories": [0, 1]} for c in ("outwork", "married", "kids", "self")},
               # one-hot copies of edlevel: computed from it at sampling, never modelled
               **{f"edlevel{i}": {"kind": "derived", "of": "edlevel", "equals": i} for i in range(1, 5)}},
    "SLID": {"sex": {"categories": ["Female", "Male"]}, "language": {"categories": ["English", "French", "Other"]}},
    "diamonds": {"cut": {"categories": ["Fair", "Good", "Very Good", "Premium", "Ideal"]},
                 "color": {"categories": list("DEFGHIJ")},
                 "clarity": {"categories": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]}},
}


def derived_columns(table: str) -> dict[str, tuple[str, object]]:
    """The columns DECLARED derived for ``table``: name -> (source column, value where it is 1). The
    DP baselines get the same declaration as CA-DASG (dropped before fitting, computed after)."""
    return {name: (d["of"], d["equals"]) for name, d in DECLARED.get(table, {}).items() if d.get("kind") == "derived"}


def datasets_dir() -> Path:
    """Directory holding the CSVs.

    ``$CADASG_DATASETS`` wins; otherwise ``shared/datasets`` inside the repo, then
    ``shared/datasets`` beside the repo (how CI lays it out), then /work/shared/datasets.
    """
    env = os.environ.get("CADASG_DATASETS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    for cand in (
        repo / "shared" / "datasets",
        repo.parent / "shared" / "datasets",
        Path("/work/shared/datasets"),
    ):
        if (cand / "MedExp.csv").exists():
            return cand
    raise FileNotFoundError(
        "datasets directory not found; set CADASG_DATASETS to the folder with MedExp.csv etc."
    )


def resolve_tables(arg: str | list[str] | None) -> list[str]:
    """'all' / None -> every table in TABLE_ORDER; 'a,b' -> validated list (case-insensitive)."""
    if arg is None:
        return list(TABLE_ORDER)
    names = arg.split(",") if isinstance(arg, str) else list(arg)
    names = [n.strip() for n in names if n.strip()]
    if not names or names == ["all"]:
        return list(TABLE_ORDER)
    lower = {k.lower(): k for k in TABLES}
    out = []
    for n in names:
        if n.lower() not in lower:
            raise KeyError(f"unknown table {n!r}; known: {', '.join(TABLES)}")
        out.append(lower[n.lower()])
    return out


def load_table(name: str, data_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, TableSpec]:
    """Read one table with its spec's ``drop`` columns removed. Values are left raw."""
    (name,) = resolve_tables([name])
    spec = TABLES[name]
    d = Path(data_dir) if data_dir is not None else datasets_dir()
    df = pd.read_csv(d / spec.file)
    if spec.drop:
        df = df.drop(columns=[c for c in spec.drop if c in df.columns])
    return df, spec


def split_indices(n: int, seed: int = 0, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Positional (train_idx, test_idx) for a table of ``n`` rows. Deterministic in (n, seed)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = n - int(round(n * test_fraction))
    return perm[:n_train], perm[n_train:]


def split(df: pd.DataFrame, seed: int = 0, test_fraction: float = TEST_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared 80/20 split: (train, test) in shuffled order, each with a fresh RangeIndex."""
    tr, te = split_indices(len(df), seed, test_fraction)
    return df.iloc[tr].reset_index(drop=True), df.iloc[te].reset_index(drop=True)


def utility_target(df: pd.DataFrame, spec: TableSpec) -> pd.Series:
    """The label downstream utility is computed on.

    classification -> 0/1 ints (``target > 0`` when ``binarize_target``, else
    ``target == positive_label``); regression -> the raw target as float. Rows whose raw
    target is missing come back as NaN (callers drop them, e.g. SLID wages).
    """
    y = df[spec.target]
    missing = y.isna()
    if spec.task == "classification":
        if spec.binarize_target:
            out = (pd.to_numeric(y, errors="coerce") > 0).astype(float)
        elif spec.positive_label is not None:
            out = (y.astype(object) == spec.positive_label).astype(float)
        else:
            raise ValueError(f"{spec.name}: classification target needs binarize_target or positive_label")
        out[missing] = np.nan
        return out.rename(spec.target)
    return pd.to_numeric(y, errors="coerce").astype(float).rename(spec.target)
