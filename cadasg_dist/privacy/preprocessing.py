"""Private preprocessing: schema, transforms and context domain from declarations or DP releases.

Privacy caveats first: nothing here reads a raw statistic of the table. What a private run needs
and the non-private ``infer_schema`` / ``DataTransformer.fit`` / ``RuleContextExtractor.fit`` read
from the rows comes from one of:

* **declarations** (``data.columns.X.kind/min/max/categories``, ``context.bands/periods``): public,
  free;
* **the storage type** of each column (its pandas dtype: bool, datetime, integer, float, text):
  public metadata, like the column names; value-based guesses (distinct counts, integrality) are
  not used;
* **two Gaussian releases** charged to the ledger (each a q = 1 Gaussian mechanism on the
  concatenation of per-column histograms; one unit changes each column's histogram by at most
  k = ``max_rows_per_unit`` in L2, so the sensitivity is k·sqrt(M) for M columns):
  ``preprocess/bounds``, a histogram of sign and magnitude (log2 bins) of every numeric column
  without declared bounds, whose extreme bins above a threshold give the bounds; and
  ``preprocess/histograms``, a histogram per column inside its bounds (plus a missing cell), which
  gives quantiles, point masses (atoms), missingness and the most common category;
* a third, ``preprocess/class_marginals`` (share ``privacy.class_marginals_share``), only when
  the target gives strata and the class calibration is on (``model.calibrate_classes``; by
  default at epsilon <= 3): per stratum of the target (its class, or a numeric target's value
  bin: ``ModelDims.stratum``, from the released quantile grid, so grouping reads nothing more), a
  histogram of every other column over the encoded rows (model/calibration.py ``class_counts``;
  each row falls in one stratum, so the sensitivity is k·sqrt(T) for T histograms), which
  sampling uses to correct each column per stratum;
* a fourth, ``preprocess/context_marginals`` (share ``privacy.context_marginals_share``), only when
  the context calibration is on (``model.calibrate_contexts``; by default at epsilon <= 3): the
  same histograms per context (``context_counts``; the pinned target class left out), which
  sampling uses to correct each column per context. Context ids come from the declared or released
  context domain, so grouping by them reads nothing more.

Text columns need declared categories: a DP release of an unknown domain needs thresholding with
a δ the Gaussian ledger cannot hold, so they are refused with the list of columns to declare.
With ``privacy.preprocessing = "declared"`` undeclared bounds are refused the same way.

Randomness (noise, the rows kept per unit, the encoder's tie spreading) comes from the OS's
entropy unless a test passes ``rng``: with a known seed the noise could be replayed, and a
seeded choice of rows would couple one unit's presence to the other units' rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig, ColumnOverride, DataConfig
from cadasg_dist.context.extractor import RuleContextExtractor, _band_labels, _period_labels
from cadasg_dist.data.schema import (
    _ID_NAME,
    MAX_INTEGER_LEVELS,
    ColumnSchema,
    Schema,
    _refuse_identifier,
    datetime_to_seconds,
    declared_derived,
    output_order,
)
from cadasg_dist.data.transforms import CategoricalTransform, ContinuousTransform, DataTransformer
from cadasg_dist.errors import ConfigError, InvalidDataError, PrivacyBudgetError
from cadasg_dist.model.calibration import class_counts, context_counts
from cadasg_dist.model.networks import class_groups, model_dims
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.privacy.training import CLASS_MARGINALS, CONTEXT_MARGINALS, plan_budget

log = logging.getLogger(__name__)

NUMERIC = ("continuous", "integer", "datetime")
# Magnitude bins of the bounds release: [2^k, 2^(k+1)) for k in [-10, 63), a zero bin and mirrors.
_EDGES = 2.0 ** np.arange(-10, 64)
_ZERO = len(_EDGES) - 1  # index of the zero bin; positive bins above it, negative below
# A magnitude bin (the bounds) or an end cell of a quantile grid counts when its noisy count exceeds this
# many noise sds (each empty cell passes with probability 3e-5) and has a neighbour that does too, or,
# alone, when it exceeds ISOLATED_SDS (1e-9): a fit draws ~1,000 empty bins, so a lone 4-sd bin is
# noise 3 % of the time (diamonds' table once got bounds up to 2^58 and every generated value ~1e16).
BOUNDS_SDS = 4.0
ISOLATED_SDS = 6.0
MISSING_SDS = 2.0  # a missing slot is added above this (a spurious one only costs a span)
SUPPORT_GAP = 10  # a quantile grid's tail goes on over at most this many empty cells (``within_support``)
CDF_SDS = 2.0  # cells at or below this many noise sds are zeroed before quantiles (else noise fills the tails)
MAX_CONTEXTS = 1024


@dataclass(frozen=True)
class PrivatePreparation:
    """What ``CADASG.prepare`` needs, built without reading raw statistics."""

    schema: Schema
    extractor: RuleContextExtractor
    transformer: DataTransformer
    frame: pd.DataFrame  # rows capped per unit and conformed to the released schema
    units: np.ndarray | None  # (N,) privacy unit of each row of ``frame``; None = one row per unit
    encode_seed: int  # for ``DataTransformer.encode``'s tie spreading: secret, like all noise
    ledger: PrivacyLedger  # the preprocessing releases, to which training adds
    released: dict[str, list[str]] = field(default_factory=dict)  # release -> the statistics it gave
    encoded: np.ndarray | None = None  # ``frame`` encoded with ``encode_seed``, when a release needed it


@dataclass
class _Column:
    name: str
    kind: str
    dtype: str
    override: ColumnOverride
    lo: float | None = None
    hi: float | None = None
    categories: tuple[Any, ...] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    has_missing: bool = False
    mode: Any = None  # most common category (noisy), the fill for a missing value without a slot
    coded: bool = False  # categorical whose categories are the integers within its bounds
    fitted: dict[str, Any] = field(default_factory=dict)  # ContinuousTransform fields
    histogram: np.ndarray | None = None  # noisy [missing, per category] counts of a categorical column


def prepare_private(df: pd.DataFrame, cfg: CADASGConfig, *, rng: np.random.Generator | None = None,
                    merge_classes: bool = True) -> PrivatePreparation:
    """Cap rows per unit, release what is not declared, and build schema, contexts and transforms.

    ``merge_classes``: let the target's thin classes share a stratum (``target_class_groups``);
    False for a model trained without DP on a privately released schema (a non-private federation),
    whose exact caches have no noise to merge against.
    ``rng`` is for tests only: a real release must leave it None (secret OS entropy). Raises
    ``ConfigError`` listing the columns to declare, ``PrivacyBudgetError`` when a bound cannot be
    found under the noise, and ``InvalidDataError`` for bad columns.
    """
    rng = entropy.secret_generator() if rng is None else rng
    frame, units = cap_units(df, cfg, rng)
    data_cfg = _data_config(cfg)
    columns, dropped = _columns(frame, data_cfg, cfg)
    derived = declared_derived(frame, data_cfg)
    _check_declarations(columns, cfg)
    need_bounds = [c for c in columns if c.lo is None and (c.kind in NUMERIC or c.coded)]
    # The class histograms are planned whenever the target may give classes (known once the target's
    # own release is in); a share planned but not spent goes to training.
    by_class = cfg.target is not None and cfg.class_calibration
    releases = (["preprocess/bounds"] if need_bounds else []) + ["preprocess/histograms"] + \
        ([CLASS_MARGINALS] if by_class else []) + ([CONTEXT_MARGINALS] if cfg.context_calibration else [])
    n_units = len(frame) if units is None else int(units.max()) + 1
    plan = plan_budget(cfg, n_rows=len(frame), n_units=n_units, has_utility=cfg.target is not None,
                       preprocessing=releases)
    ledger = PrivacyLedger(delta=plan.delta)
    k = 1 if units is None else cfg.privacy.max_rows_per_unit
    released: dict[str, list[str]] = {}
    if need_bounds:
        sigma = plan.full_pass["preprocess/bounds"]
        release_bounds(frame, need_bounds, sigma=sigma, rows_per_unit=k, rng=rng)
        ledger.record(name="preprocess/bounds", noise_multiplier=sigma, sample_rate=1.0,
                      sensitivity=k * math.sqrt(len(need_bounds)))
        released["preprocess/bounds"] = [f"{c.name}.bounds" for c in need_bounds]
    for col in columns:
        _settle_kind(col, cfg.data.max_categories)
    sigma = plan.full_pass["preprocess/histograms"]
    release_histograms(frame, columns, sigma=sigma, rows_per_unit=k, bins=cfg.privacy.histogram_bins,
                       n_quantiles=cfg.data.n_quantiles, atom_share=cfg.data.atom_share, rng=rng)
    sensitivity = k * math.sqrt(len(columns))
    hist_std = sigma * sensitivity  # of every released count, the target's class counts among them
    ledger.record(name="preprocess/histograms", noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
    released["preprocess/histograms"] = [f"{c.name}.{s}" for c in columns
                                         for s in ("missing", *c.fitted, *(("frequencies",) if c.histogram is not None
                                                                          else ()))]
    schema = Schema(columns=tuple(_schema_column(c) for c in columns), dropped=tuple(dropped),
                    derived=derived, order=output_order(frame, data_cfg))
    by_name = {c.name: c for c in columns}
    extractor = private_extractor(cfg, schema, by_name)
    if cfg.target is not None and cfg.target in extractor.categorical_columns:
        raise InvalidDataError(f"target column {cfg.target!r} cannot also be a context column")
    transformer = DataTransformer(schema, cfg.data.continuous_encoding, cfg.data.n_quantiles,
                                  exclude=extractor.categorical_columns, atom_share=cfg.data.atom_share)
    for name, t in transformer.transforms.items():
        col = by_name[name]
        if isinstance(t, ContinuousTransform):
            for key, value in col.fitted.items():
                setattr(t, key, value)
        elif col.histogram is not None:
            t.frequencies = released_frequencies(col.histogram, col.has_missing)
    transformer.spans = transformer._layout()  # atoms add spans
    frame = conform(frame, columns, transformer)
    encode_seed, x = int(rng.integers(2**62)), None
    if cfg.target is not None and merge_classes:
        transformer.class_groups = target_class_groups(transformer.transforms.get(cfg.target), extractor.n_contexts,
                                                       len(frame), cfg.model.merge_class_sds * hist_std)
    dims = model_dims(transformer.output_dim, transformer.spans, extractor.n_contexts, cfg.target, cfg.model,
                      transformer.class_groups)
    pinned = dims.strata_span
    by_stratum = by_class and dims.strata > 1
    if by_stratum or cfg.context_calibration:
        x = transformer.encode(frame, seed=encode_seed)
        resolution = {c.name: value_resolution(c, cfg.privacy.histogram_bins) for c in columns
                      if c.categories is None and c.lo is not None}
    if by_stratum:
        sigma = plan.full_pass[CLASS_MARGINALS]
        transformer.class_marginals = release_group_marginals(class_counts(x, transformer, dims, resolution),
                                                              sigma=sigma, rows_per_unit=k, rng=rng)
        ledger.record(name=CLASS_MARGINALS, noise_multiplier=sigma, sample_rate=1.0,
                      sensitivity=k * math.sqrt(len(transformer.class_marginals["counts"])))
        released[CLASS_MARGINALS] = [f"{c}.by_{cfg.target}" for c in transformer.class_marginals["counts"]]
    if cfg.context_calibration:
        sigma = plan.full_pass[CONTEXT_MARGINALS]
        exact = context_counts(x, transformer, extractor.ids(frame), extractor.n_contexts,
                               None if pinned is None else pinned.column, resolution)
        transformer.context_marginals = release_group_marginals(exact, sigma=sigma, rows_per_unit=k, rng=rng)
        ledger.record(name=CONTEXT_MARGINALS, noise_multiplier=sigma, sample_rate=1.0,
                      sensitivity=k * math.sqrt(len(exact)))
        released[CONTEXT_MARGINALS] = [f"{c}.by_context" for c in exact]
    return PrivatePreparation(schema, extractor, transformer, frame, units, encode_seed, ledger, released, x)


# --- units ------------------------------------------------------------------------------------

def cap_units(df: pd.DataFrame, cfg: CADASGConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Keep at most ``privacy.max_rows_per_unit`` rows of each unit, chosen at random.

    Returns the capped table and each row's unit index (0..U-1), or (df, None) for row-level
    privacy. With secret randomness, the rows a unit keeps are independent of the other units, so
    capping costs nothing; a seeded choice would not be (adding a unit reshuffles the others).
    """
    unit = cfg.privacy.unit
    if unit is None:
        return df, None
    if unit not in df.columns:
        raise InvalidDataError(f"unknown privacy unit column {unit!r}; columns: {', '.join(map(str, df.columns))}")
    if unit == cfg.target or unit in cfg.context.columns:
        raise ConfigError(f"the privacy unit column {unit!r} cannot be the target or a context column")
    if df[unit].isna().any():
        raise InvalidDataError(f"privacy unit column {unit!r} has missing values: a row without a unit "
                               "cannot have its contribution bounded; fill or drop them")
    codes, _ = pd.factorize(df[unit])
    order = rng.permutation(len(df))
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = pd.Series(codes[order]).groupby(codes[order]).cumcount().to_numpy()
    keep = np.flatnonzero(rank < cfg.privacy.max_rows_per_unit)
    units, _ = pd.factorize(codes[keep])
    return df.iloc[keep].reset_index(drop=True), units.astype(np.int64)


def _data_config(cfg: CADASGConfig) -> DataConfig:
    """The data config with the unit column declared an identifier (never modelled)."""
    unit = cfg.privacy.unit
    if unit is None:
        return cfg.data
    columns = dict(cfg.data.columns)
    columns[unit] = dataclasses.replace(columns.get(unit, ColumnOverride()), kind="identifier")
    return dataclasses.replace(cfg.data, columns=columns)


# --- kinds and declarations (no value is read) ------------------------------------------------

def _columns(df: pd.DataFrame, data_cfg: DataConfig, cfg: CADASGConfig) -> tuple[list[_Column], list[str]]:
    unknown = sorted(set(data_cfg.columns) - set(map(str, df.columns)))
    if unknown:
        raise InvalidDataError(f"config declares column {unknown[0]!r}, which the table does not have; "
                               f"columns: {', '.join(map(str, df.columns))}")
    columns, dropped = [], []
    for name in map(str, df.columns):
        override = data_cfg.columns.get(name, ColumnOverride())
        if override.kind == "identifier":
            dropped.append(name)
        if override.kind in ("identifier", "derived"):  # derived: computed at sampling, never read
            continue
        kind = override.kind or _storage_kind(df[name], name)
        col = _Column(name, kind, str(df[name].dtype), override)
        col.coded = kind == "categorical" and override.categories is None and _numeric_dtype(col)
        if (kind in NUMERIC or col.coded) and override.min is not None and override.max is not None:
            col.lo, col.hi = float(override.min), float(override.max)
            if col.lo > col.hi:
                raise InvalidDataError(f"column {name!r}: declared min {col.lo} is above max {col.hi}")
            col.sources["bounds"] = "declared"
        elif kind == "boolean":
            col.categories = (False, True) if override.categories is None else tuple(override.categories)
            col.sources["categories"] = "declared"
        elif kind == "categorical" and override.categories is not None:
            col.categories = _typed_categories(override.categories, df[name])
            col.sources["categories"] = "declared"
        elif kind not in NUMERIC + ("categorical",):
            raise InvalidDataError(f"column {name!r}: unknown kind {kind!r}; use continuous, integer, "
                                   "categorical, boolean, datetime or identifier")
        columns.append(col)
    if cfg.target is not None and cfg.target in dropped:
        raise InvalidDataError(f"target column {cfg.target!r} is declared an identifier")
    if not columns:
        raise InvalidDataError("no column is left to model once identifiers are dropped")
    return columns, dropped


def _storage_kind(s: pd.Series, name: str) -> str:
    """Kind from the storage type alone (public metadata), never from the values."""
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if _ID_NAME.match(name):
        _refuse_identifier(name, "its name marks it as an identifier")
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_numeric_dtype(s):
        return "continuous"
    return "categorical"


def _typed_categories(declared: tuple[Any, ...], s: pd.Series) -> tuple[Any, ...]:
    """Declared categories (strings from config) in the column's own type, so they match its values."""
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return tuple(declared)
    out = []
    for v in declared:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InvalidDataError(f"column {s.name!r} is numeric but declares category {v!r}") from None
        out.append(int(f) if f.is_integer() else f)
    return tuple(out)


def _check_declarations(columns: list[_Column], cfg: CADASGConfig) -> None:
    text = [c.name for c in columns if c.kind == "categorical" and c.categories is None and not c.coded]
    bounds = [c.name for c in columns if c.lo is None and (c.kind in NUMERIC or c.coded)]
    if cfg.privacy.preprocessing == "declared" and bounds:
        raise ConfigError(
            "privacy.preprocessing is 'declared' but these columns have no declared bounds: "
            + ", ".join(bounds) + "; declare data.columns.NAME.min and .max (or set privacy.preprocessing: dp "
            "to estimate them with part of the budget)")
    if text:
        raise ConfigError(
            "a private run cannot read category sets from the data; declare them for: " + ", ".join(text)
            + " (data.columns.NAME.categories: [...], or kind: identifier to drop the column)")


def _numeric_dtype(col: _Column) -> bool:
    return col.dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))


def _settle_kind(col: _Column, max_categories: int) -> None:
    """Post-processing of the (declared or released) bounds: a numeric-coded categorical, and an
    undeclared integer column with at most MAX_INTEGER_LEVELS values in range (as ``infer_schema``
    does with distinct values), get the integers within the bounds as categories."""
    if col.kind == "integer" and col.override.kind is None and col.hi - col.lo + 1 <= MAX_INTEGER_LEVELS:
        col.kind, col.coded = "categorical", True
    if col.coded:
        if col.hi - col.lo + 1 > max_categories:
            raise ConfigError(f"column {col.name!r} is categorical but its bounds [{col.lo:g}, {col.hi:g}] hold more "
                              f"than data.max_categories={max_categories} integers; declare its categories "
                              f"(data.columns.{col.name}.categories)")
        col.categories = tuple(range(int(col.lo), int(col.hi) + 1))
        col.sources = {"categories": col.sources.pop("bounds")}


# --- the two releases -------------------------------------------------------------------------

def _numeric_values(s: pd.Series, kind: str) -> np.ndarray:
    """Float values with NaN for missing (datetimes as seconds)."""
    if kind == "datetime":
        out = np.full(len(s), np.nan)
        present = s.notna().to_numpy()
        out[present] = datetime_to_seconds(s[present])
        return out
    try:
        return pd.to_numeric(s).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise InvalidDataError(f"column {s.name!r} is {kind} but holds non-numeric values") from None


def _magnitude_bins(x: np.ndarray) -> np.ndarray:
    k = np.clip(np.searchsorted(_EDGES, np.abs(x), side="right") - 1, -1, len(_EDGES) - 2)  # -1: zero bin
    return np.where(k < 0, _ZERO, np.where(x > 0, _ZERO + 1 + k, _ZERO - 1 - k))


def _bin_edges(b: int) -> tuple[float, float, bool, bool]:
    """(low, high, low open, high open) of magnitude bin ``b``."""
    if b == _ZERO:
        return -_EDGES[0], _EDGES[0], True, True
    if b > _ZERO:
        k = b - _ZERO - 1
        return _EDGES[k], _EDGES[k + 1], False, True
    k = _ZERO - 1 - b
    return -_EDGES[k + 1], -_EDGES[k], True, False


def release_bounds(df: pd.DataFrame, columns: list[_Column], *, sigma: float, rows_per_unit: int,
                   rng: np.random.Generator) -> None:
    """Gaussian release of each column's magnitude histogram; bounds = extreme bins above the
    threshold (``credible_cells``), so they are tight up to a factor 2 in magnitude (declare them
    for better ones)."""
    std = sigma * rows_per_unit * math.sqrt(len(columns))
    n_bins = 2 * _ZERO + 1
    for col in columns:
        x = _numeric_values(df[col.name], col.kind)
        x = x[~np.isnan(x)]
        noisy = np.bincount(_magnitude_bins(x), minlength=n_bins) + rng.normal(0.0, std, n_bins)
        hits = credible_cells(noisy, std)
        if hits.size == 0:
            raise PrivacyBudgetError(
                f"column {col.name!r}: no magnitude bin holds enough rows to release its bounds under the noise "
                f"(sd {std:.1f} rows); declare data.columns.{col.name}.min and .max, or raise epsilon")
        lo, _, lo_open, _ = _bin_edges(int(hits[0]))
        _, hi, _, hi_open = _bin_edges(int(hits[-1]))
        if col.kind in ("integer", "categorical"):
            lo = math.floor(lo) + 1 if lo_open else math.ceil(lo)
            hi = math.ceil(hi) - 1 if hi_open else math.floor(hi)
        override = col.override
        col.lo = float(override.min) if override.min is not None else float(lo)
        col.hi = float(override.max) if override.max is not None else float(max(hi, col.lo))
        col.sources["bounds"] = "dp"


def _cells(col: _Column, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of a numeric column inside [lo, hi]: (points, interval starts, interval ends)."""
    lo, hi = col.lo, col.hi
    if col.kind == "integer" and hi - lo + 1 <= 2 * bins:
        return np.arange(lo, hi + 1), np.empty(0), np.empty(0)
    inner_zero = lo < 0 < hi and col.kind != "datetime"
    edges = np.linspace(lo, hi, bins + 1)
    if inner_zero:  # 0 is a candidate atom: make it an edge so its point cell starts an interval
        edges = np.unique(np.r_[edges, 0.0])
    return np.unique([lo, hi] + ([0.0] if inner_zero else [])), edges[:-1], edges[1:]


def release_histograms(df: pd.DataFrame, columns: list[_Column], *, sigma: float, rows_per_unit: int, bins: int,
                       n_quantiles: int, atom_share: float, rng: np.random.Generator) -> None:
    """Gaussian release of one histogram per column (a missing cell, then categories or numeric
    cells); sets each column's missingness, mode, and quantiles/atom (post-processing)."""
    std = sigma * rows_per_unit * math.sqrt(len(columns))
    for col in columns:
        s = df[col.name]
        missing = s.isna().to_numpy()
        if col.categories is not None:
            lookup = {v: i for i, v in enumerate(col.categories)}
            codes = np.array([lookup.get(_key(v), -1) for v in s[~missing].tolist()], dtype=np.int64)
            counts = np.bincount(codes[codes >= 0], minlength=len(col.categories)).astype(float)
            noisy = np.r_[missing.sum(), counts] + rng.normal(0.0, std, len(counts) + 1)
            col.mode = col.categories[int(np.argmax(noisy[1:]))]
            col.histogram = noisy
        else:
            x = np.clip(_numeric_values(s, col.kind)[~missing], col.lo, col.hi)
            points, starts, ends = _cells(col, bins)
            on_point = np.isin(x, points)
            point_counts = np.array([(x == p).sum() for p in points], dtype=float)
            interval_counts = (np.histogram(x[~on_point], bins=np.r_[starts, ends[-1:]])[0].astype(float)
                               if len(starts) else np.empty(0))
            noisy = np.r_[missing.sum(), point_counts, interval_counts] + rng.normal(0.0, std, 1 + len(points)
                                                                                     + len(starts))
            col.fitted = _fit_numeric(col, points, starts, ends, np.clip(noisy[1:], 0, None), std,
                                      n_quantiles=n_quantiles, atom_share=atom_share)
        col.has_missing = bool(noisy[0] > MISSING_SDS * std)
        col.sources["missing"] = "dp"


def value_resolution(col: _Column, bins: int) -> float:
    """Half the width of the value cells that ``preprocess/histograms`` gave a numeric column (one
    per integer, or ``bins`` intervals): the quantile grid is linear inside each, so a tied value
    is spread over its cell when the class histograms count it (``class_counts``)."""
    points, starts, ends = _cells(col, bins)
    return 0.5 if len(starts) == 0 else float(np.max(ends - starts)) / 2.0


def target_class_groups(t: Any, n_contexts: int, n_rows: int, floor: float) -> list[int] | None:
    """A categorical target's thin classes merged into one model stratum each
    (``ModelDims.class_groups``). A stratum is a cell per context of the cache, the cell
    allocation, the decoder's stratum input and the class histograms; a class expected to hold
    fewer than ``floor`` rows per context (``model.merge_class_sds`` sds of the target's released
    counts) makes cells of noise, which sampling then fills with rows of that class (rwm5yr at
    ε = 3: hospvis's classes 2 and 3, some 185 and 38 rows over 10 contexts against a count sd of
    25, join class 1). Inside a group the decoder chooses the class, and the calibration moves its
    choices onto the released shares. Post-processing: the target's released shares
    (``preprocess/histograms``) times the public row count. None for a numeric target or when no
    class is thin."""
    if not isinstance(t, CategoricalTransform) or t.frequencies is None:
        return None
    n = len(t.categories)  # a missing slot (last) keeps a stratum of its own: it is no class's neighbour
    groups = class_groups(n_rows * np.asarray(t.frequencies[:n]), floor * n_contexts)
    return None if groups is None else [*groups, *([groups[-1] + 1] if len(t.frequencies) > n else [])]


def release_group_marginals(exact: dict[str, np.ndarray], *, sigma: float, rows_per_unit: int,
                            rng: np.random.Generator) -> dict[str, Any]:
    """Gaussian release of per-group histograms (``model.calibration.class_counts`` or
    ``context_counts`` over the encoded rows): each row adds at most 1 to each of the T histograms
    (split over its cells), so a unit's L2 sensitivity is at most rows_per_unit * sqrt(T); every
    cell gets noise of that times ``sigma``."""
    std = sigma * rows_per_unit * math.sqrt(max(len(exact), 1))
    counts = {name: (c + rng.normal(0.0, std, c.shape)).tolist() for name, c in exact.items()}
    return {"std": std, "counts": counts}


def released_frequencies(noisy: np.ndarray, has_missing: bool) -> list[float]:
    """Code shares of a categorical column from its noisy [missing, categories...] histogram, in the
    transform's code order (categories, then the missing slot); post-processing of the release."""
    counts = np.clip(np.r_[noisy[1:], noisy[:1]] if has_missing else noisy[1:], 0.0, None)
    total = counts.sum()
    return (counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))).tolist()


def _fit_numeric(col: _Column, points: np.ndarray, starts: np.ndarray, ends: np.ndarray, counts: np.ndarray,
                 std: float, *, n_quantiles: int, atom_share: float) -> dict[str, Any]:
    """ContinuousTransform fields from noisy cell counts (mirrors ``ContinuousTransform.fit``)."""
    n_points = len(points)
    lows, highs = np.r_[points, starts], np.r_[points, ends]
    atom = None
    # ``ContinuousTransform.fit``'s "more than two distinct values", from the public cell layout (noisy presence would
    # hide the small values that make a point mass worth its own span)
    if n_points and atom_share < 1 and len(counts) > 2:
        top = int(np.argmax(counts[:n_points]))
        if counts[top] >= atom_share * counts.sum():
            atom = float(points[top])
            counts = counts.copy()
            counts[top] = 0.0
    col.sources["quantiles"] = "dp"
    counts = np.where(counts > CDF_SDS * std, counts, 0.0)
    order = np.lexsort((highs - lows > 0, lows))  # by position, a point before the interval it starts
    lows, highs, mass = lows[order], highs[order], within_support(counts[order], std)
    total = mass.sum()
    if total <= 0:
        quantiles = np.linspace(col.lo, col.hi, n_quantiles)
    else:
        cum = np.cumsum(mass)
        target = np.linspace(0.0, 1.0, n_quantiles) * total
        j = np.minimum(np.searchsorted(cum, target, side="left"), len(cum) - 1)
        before = cum[j] - mass[j]
        frac = np.divide(target - before, mass[j], out=np.zeros_like(target), where=mass[j] > 0)
        quantiles = lows[j] + np.clip(frac, 0, 1) * (highs[j] - lows[j])
        inside = np.flatnonzero(mass > 0)
        quantiles[0], quantiles[-1] = lows[inside[0]], highs[inside[-1]]
    mid = (lows + highs) / 2
    weights = mass / total if total > 0 else np.full(len(mass), 1.0 / len(mass))
    mean = float((weights * mid).sum())
    var = float((weights * ((mid - mean) ** 2 + (highs - lows) ** 2 / 12)).sum())
    return {"quantiles": np.maximum.accumulate(quantiles), "atom": atom, "mean": mean,
            "std": math.sqrt(var) or 1.0}


def within_support(mass: np.ndarray, std: float) -> np.ndarray:
    """Cell masses (in position order) with the tails beyond the released support zeroed: the
    quantile grid ends there, not at the bounds. The support runs from the outermost
    ``credible_cells`` out through any further cells left by ``CDF_SDS`` that are at most
    ``SUPPORT_GAP`` empty cells apart (a thin tail, such as hours heaped at 40, 50, 60).

    Why: the released bounds are loose (to a factor 2: diamonds' depth, 43-79, gets [32, 128]) and
    a lone tail cell that merely passed ``CDF_SDS`` is, among tens of empty ones, likely noise (2.3 %
    each). Either as the grid's end stretches its last step over the whole gap, and a generator
    that pushes some rows to the edge of its range (a rare context under DP) puts them there: 7 % of
    diamonds' Fair rows had depth above 100 at epsilon = 3. Post-processing of the release.
    """
    strong = credible_cells(mass, std)
    if strong.size == 0:
        return mass
    lo, hi = int(strong[0]), int(strong[-1])
    lo, hi = _extend(mass, lo, -1), _extend(mass, hi, +1)
    out = np.zeros_like(mass)
    out[lo:hi + 1] = mass[lo:hi + 1]
    return out


def credible_cells(counts: np.ndarray, std: float) -> np.ndarray:
    """Indices of the cells that hold rows beyond doubt: above ``BOUNDS_SDS`` noise sds with an
    adjacent cell above it too, or above ``ISOLATED_SDS`` alone; if none is, every cell above
    ``BOUNDS_SDS`` (a table so small that its real cells are near the threshold: refusing it would
    be the only alternative). Post-processing of a release."""
    above = counts > BOUNDS_SDS * std
    paired = above & (np.r_[False, above[:-1]] | np.r_[above[1:], False])
    sure = np.flatnonzero(paired | (counts > ISOLATED_SDS * std))
    return sure if sure.size else np.flatnonzero(above)


def _extend(mass: np.ndarray, end: int, step: int) -> int:
    """The support's end walked outward from ``end`` over non-empty cells no more than ``SUPPORT_GAP`` apart."""
    i, gap = end + step, 0
    while 0 <= i < len(mass) and gap <= SUPPORT_GAP:
        if mass[i] > 0:
            end, gap = i, 0
        else:
            gap += 1
        i += step
    return end


def _key(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# --- schema, contexts, frame ------------------------------------------------------------------

def _schema_column(col: _Column) -> ColumnSchema:
    dtype = col.dtype
    if col.kind == "integer" and dtype.startswith("float"):
        dtype = "Int64" if col.has_missing else "int64"
    numeric = col.kind in NUMERIC
    return ColumnSchema(name=col.name, kind=col.kind, dtype=dtype, has_missing=col.has_missing,
                        min=col.lo if numeric else None, max=col.hi if numeric else None,
                        categories=col.categories, sources=dict(col.sources))


def private_extractor(cfg: CADASGConfig, schema: Schema, columns: dict[str, _Column]) -> RuleContextExtractor:
    """The context domain: every combination of each context column's public or released labels
    (categories, bands within the bounds, periods within the bounds), never the observed ones."""
    for name in cfg.context.columns:
        col = columns.get(name)
        if col is not None and col.kind in ("continuous", "integer") and name not in cfg.context.bands:
            raise ConfigError(f"context column {name!r} is numeric in a private run: declare its values "
                              f"(data.columns.{name}.kind: categorical, data.columns.{name}.categories: [...]) "
                              f"or give its bands (context.bands.{name}: [edges...])")
    ex = RuleContextExtractor(cfg.context, schema)
    label_sets = [_labels(cfg, columns[c]) for c in ex.columns]
    size = math.prod(len(labels) for labels in label_sets)
    if size > MAX_CONTEXTS:
        raise ConfigError(f"the context domain has {size} combinations (at most {MAX_CONTEXTS}); use fewer "
                          "context columns, coarser bands or periods, or fewer declared categories")
    keys = list(itertools.product(*label_sets)) if ex.columns else [()]
    ex.domain = sorted(keys, key=lambda k: tuple((v is None, str(type(v)), v) for v in k))
    ex._index = {k: i for i, k in enumerate(ex.domain)}
    label_sources = [columns[c].sources.get("categories", columns[c].sources.get("bounds")) for c in ex.columns]
    ex.domain_source = "declared" if all(src == "declared" for src in label_sources) else "dp"
    return ex


def _labels(cfg: CADASGConfig, col: _Column) -> list[Any]:
    if col.kind in ("categorical", "boolean"):
        labels = list(col.categories)
    elif col.kind == "datetime":
        freq = {"year": "Y", "quarter": "Q", "month": "M"}[cfg.context.periods[col.name]]
        span = pd.period_range(pd.Timestamp(col.lo, unit="s"), pd.Timestamp(col.hi, unit="s"), freq=freq)
        labels = list(dict.fromkeys(_period_labels(pd.Series(span.to_timestamp()), cfg.context.periods[col.name])))
    else:
        edges = cfg.context.bands[col.name]
        bounds = [-math.inf, *edges, math.inf]
        reps = [max(a, col.lo) for a, b in zip(bounds, bounds[1:]) if a <= col.hi and b > col.lo]
        labels = list(dict.fromkeys(_band_labels(np.asarray(reps, dtype=float), edges)))
    return labels + ([None] if col.has_missing else [])


def conform(df: pd.DataFrame, columns: list[_Column], transformer: DataTransformer) -> pd.DataFrame:
    """The table as the released schema sees it: numeric values clipped to their bounds, and a
    missing value in a column without a missing slot replaced (the median, or the noisy mode).
    Each row is changed on its own, from released quantities only: no extra cost."""
    out = df.copy()
    for col in columns:
        s = out[col.name]
        missing = s.isna()
        if col.kind == "datetime":
            x = _numeric_values(s, col.kind)
            fill = transformer.transforms[col.name]._fill_value() if col.name in transformer.transforms else col.lo
            x = np.clip(np.where(np.isnan(x), np.nan if col.has_missing else fill, x), col.lo, col.hi)
            out[col.name] = pd.to_datetime(pd.Series(x * 1e9).round().astype("Int64"), errors="coerce").to_numpy()
        elif col.kind in NUMERIC:
            x = np.clip(_numeric_values(s, col.kind), col.lo, col.hi)
            if missing.any() and not col.has_missing:
                t = transformer.transforms.get(col.name)
                x = np.where(np.isnan(x), t._fill_value() if t is not None else col.lo, x)
            if col.kind == "integer":
                x = np.round(x)
            out[col.name] = x
        else:
            if missing.any() and not col.has_missing:
                s = s.astype(object).where(~missing, col.mode)
            if col.coded:  # integers within the bounds
                values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                values = np.clip(np.round(values), col.lo, col.hi)
                s = pd.Series([None if np.isnan(v) else int(v) for v in values], index=s.index, dtype=object)
            out[col.name] = s
    return out
