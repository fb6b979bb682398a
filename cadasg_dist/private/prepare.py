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
  histogram of every other column over the encoded rows (model/histograms.py ``class_counts``;
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

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.extractor import RuleContextExtractor, band_labels, period_labels
from cadasg_dist.data.schema import (
    DerivedColumn,
    Schema,
    declared_derived,
    output_order,
)
from cadasg_dist.data.transforms import CategoricalTransform, ContinuousTransform, DataTransformer
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.model.histograms import class_counts, context_counts
from cadasg_dist.model.networks import ModelDims, class_groups, model_dims
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger
from cadasg_dist.private.budget import CLASS_MARGINALS, CONTEXT_MARGINALS, COUNT, BudgetPlan, count_sigma, plan_budget
from cadasg_dist.private.columns import (
    NUMERIC,
    PrivateColumn,
    check_declarations,
    conform_categories,
    numeric_values,
    read_columns,
    schema_column,
    settle_kind,
    unit_data_config,
)
from cadasg_dist.private.releases import (
    release_bounds,
    release_count,
    release_group_marginals,
    release_histograms,
    released_frequencies,
    unreleased_bounds_error,
    value_resolution,
)
from cadasg_dist.private.sampling import cap_units

log = logging.getLogger(__name__)

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
    dims: ModelDims  # the model's dimensions (strata from the released target)
    plan: BudgetPlan  # the run's one budget plan: training's noise after the releases above
    released: dict[str, list[str]] = field(default_factory=dict)  # release -> the statistics it gave
    encoded: np.ndarray | None = None  # ``frame`` encoded with ``encode_seed``, when a release needed it


def prepare_private(df: pd.DataFrame, cfg: CADASGConfig, *, rng: np.random.Generator | None = None,
                    merge_classes: bool = True) -> PrivatePreparation:
    """Cap rows per unit, release what is not declared, build schema, contexts and transforms, and
    plan the training budget on what is left (the run's one ``BudgetPlan``).

    ``merge_classes``: let the target's thin classes share a stratum (``target_class_groups``);
    False for a model trained without DP on a privately released schema (a non-private federation),
    whose exact caches have no noise to merge against.
    ``rng`` is for tests only: a real release must leave it None (secret OS entropy). Raises
    ``ConfigError`` listing the columns to declare, ``PrivacyBudgetError`` when a bound cannot be
    found under the noise, and ``InvalidDataError`` for bad columns.
    """
    rng = entropy.secret_generator() if rng is None else rng
    frame, units = cap_units(df, cfg, rng)
    data_cfg = unit_data_config(cfg)
    columns, dropped = read_columns(frame, data_cfg, cfg)
    derived = declared_derived(frame, data_cfg)
    check_declarations(columns, cfg)
    frame = conform_categories(frame, columns)  # a value outside a declared set: missing, never echoed
    k = 1 if units is None else cfg.privacy.max_rows_per_unit
    # the exact size is read by the count release alone; everything after uses run.n_rows / n_units
    run = _Releases.start(cfg, columns, len(frame), None if units is None else int(units.max()) + 1, k, rng)
    columns, hist_std, left_out = run.release_columns(frame, columns, derived)
    schema, extractor, transformer, dims = released_layout(
        cfg, output_order(frame, data_cfg), columns, tuple(dropped), tuple(left_out), derived, run.n_rows,
        hist_std if merge_classes else None)
    frame = conform(frame, columns, transformer)
    encode_seed = int(rng.integers(2**62))
    x = run.release_marginals(frame, columns, transformer, extractor, dims, encode_seed)
    plan = plan_budget(cfg, n_rows=run.n_rows, n_units=run.n_units, has_utility=bool(dims.target_spans),
                       spent=run.ledger.mechanisms)
    return PrivatePreparation(schema, extractor, transformer, frame, units, encode_seed, run.ledger, dims, plan,
                              run.released, x)


def released_layout(cfg: CADASGConfig, order: tuple[str, ...], columns: list[PrivateColumn], dropped: tuple[str, ...],
                    left_out: tuple[str, ...], derived: Any, n_rows: int, hist_std: float | None
                    ) -> tuple[Schema, RuleContextExtractor, DataTransformer, ModelDims]:
    """Schema, contexts, transforms and model dimensions from the released ``columns``: what a
    private preparation builds once the column releases are done, from pooled rows
    (``prepare_private``) or from the silos' sums (the federated plan round). ``order``: the
    table's column order; ``dropped``: the columns the config drops; ``left_out``: those the
    releases left out (no longer in the output either); ``n_rows``: the released count;
    ``hist_std``: the histograms' noise, against which the target's thin classes merge (None:
    no merging). Reads no row."""
    schema = Schema(columns=tuple(schema_column(c) for c in columns), dropped=(*dropped, *left_out),
                    derived=derived, order=tuple(n for n in order if n not in left_out))
    by_name = {c.name: c for c in columns}
    extractor = private_extractor(cfg, schema, by_name)
    if cfg.target is not None and cfg.target in extractor.categorical_columns:
        raise InvalidDataError(f"target column {cfg.target!r} cannot also be a context column")
    transformer = released_transformer(cfg, schema, extractor, by_name)
    groups = None
    if cfg.target is not None and hist_std is not None:
        groups = target_class_groups(transformer.transforms.get(cfg.target), extractor.n_contexts, n_rows,
                                     cfg.privacy.merge_class_sds * hist_std)
    dims = model_dims(transformer.output_dim, transformer.spans, extractor.n_contexts, cfg.target, cfg.model,
                      None if groups is None else tuple(groups))
    return schema, extractor, transformer, dims


@dataclass
class _Releases:
    """The preprocessing releases of one private run: their shares of the budget, the ledger that
    records them and the names of the statistics each gave."""

    cfg: CADASGConfig
    plan: BudgetPlan  # the preprocessing shares; training is planned once they are spent
    ledger: PrivacyLedger
    rows_per_unit: int
    rng: np.random.Generator
    n_rows: int  # released (noisy) counts: the only size anything after the count release reads
    n_units: int
    released: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def start(cls, cfg: CADASGConfig, columns: list[PrivateColumn], n_rows: int, n_units: int | None,
              rows_per_unit: int, rng: np.random.Generator) -> _Releases:
        """Release the table's size first (its noise is fixed from ε alone), then plan the other
        releases' shares on the released size. ``n_units`` None: one row per unit."""
        sigma = count_sigma(cfg.privacy.epsilon, cfg.privacy.count_share)
        rows, units, sensitivity = release_count(n_rows, n_units, sigma=sigma, rows_per_unit=rows_per_unit, rng=rng)
        count = Mechanism(name=COUNT, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        # The class histograms are planned whenever the target may give classes (known once the
        # target's own release is in); a share planned but not spent goes to training.
        names = ((["preprocess/bounds"] if _need_bounds(columns) else []) + ["preprocess/histograms"]
                 + ([CLASS_MARGINALS] if cfg.target is not None and cfg.class_calibration else [])
                 + ([CONTEXT_MARGINALS] if cfg.context_calibration else []))
        plan = plan_budget(cfg, n_rows=rows, n_units=units, has_utility=cfg.target is not None,
                           preprocessing=names, spent=[count])
        ledger = PrivacyLedger(delta=plan.delta)
        ledger.record(name=COUNT, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        return cls(cfg, plan, ledger, rows_per_unit, rng, rows, units, {COUNT: ["rows", "units"]})

    def record(self, name: str, count: int, statistics: list[str]) -> float:
        """Record release ``name`` over ``count`` histograms; returns the sd of each released count."""
        sigma, sensitivity = self.plan.full_pass[name], self.rows_per_unit * math.sqrt(count)
        self.ledger.record(name=name, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        self.released[name] = statistics
        return sigma * sensitivity

    def release_columns(self, frame: pd.DataFrame, columns: list[PrivateColumn],
                        derived: tuple[DerivedColumn, ...] = ()) -> tuple[list[PrivateColumn], float, tuple[str, ...]]:
        """Bounds where undeclared, then every column's histogram. Returns the columns modelled, the
        histograms' count sd and the columns left out (``privacy.unreleased_bounds: drop``)."""
        cfg, k = self.cfg, self.rows_per_unit
        need_bounds = _need_bounds(columns)
        left_out: tuple[str, ...] = ()
        if need_bounds:
            unreleased, std = release_bounds(frame, need_bounds, sigma=self.plan.full_pass["preprocess/bounds"],
                                             rows_per_unit=k, rng=self.rng)
            self.record("preprocess/bounds", len(need_bounds), [f"{c.name}.bounds" for c in need_bounds])
            left_out = settle_unreleased(cfg, [c.name for c in unreleased], std, derived)
            columns = [c for c in columns if c.name not in left_out]
            if not columns:
                raise InvalidDataError("no column is left to model once the columns without released bounds "
                                       f"are left out ({', '.join(map(repr, left_out))}); declare their bounds")
        for col in columns:
            settle_kind(col, cfg.data.max_categories, cfg.target)
        release_histograms(frame, columns, sigma=self.plan.full_pass["preprocess/histograms"], rows_per_unit=k,
                           bins=cfg.privacy.histogram_bins, n_quantiles=cfg.data.n_quantiles,
                           atom_share=cfg.data.atom_share, rng=self.rng)
        stats = [f"{c.name}.{s}" for c in columns
                 for s in ("missing", *c.fitted, *(("frequencies",) if c.histogram is not None else ()))]
        # the target's class counts among them
        return columns, self.record("preprocess/histograms", len(columns), stats), left_out

    def release_marginals(self, frame: pd.DataFrame, columns: list[PrivateColumn], transformer: DataTransformer,
                          extractor: RuleContextExtractor, dims: ModelDims, encode_seed: int) -> np.ndarray | None:
        """The per-stratum and per-context marginals the calibration needs; returns ``frame``
        encoded with ``encode_seed`` when a release needed it (else None)."""
        cfg, k = self.cfg, self.rows_per_unit
        by_stratum = cfg.target is not None and cfg.class_calibration and dims.strata > 1
        if not (by_stratum or cfg.context_calibration):
            return None
        x = transformer.encode(frame, seed=encode_seed)
        resolution = {c.name: value_resolution(c, cfg.privacy.histogram_bins) for c in columns
                      if c.categories is None and c.lo is not None}
        if by_stratum:
            marginals = release_group_marginals(class_counts(x, transformer, dims, resolution),
                                                sigma=self.plan.full_pass[CLASS_MARGINALS], rows_per_unit=k,
                                                rng=self.rng)
            transformer.class_marginals = marginals
            self.record(CLASS_MARGINALS, len(marginals["counts"]),
                        [f"{c}.by_{cfg.target}" for c in marginals["counts"]])
        if cfg.context_calibration:
            pinned = dims.strata_span
            exact = context_counts(x, transformer, extractor.ids(frame), extractor.n_contexts,
                                   None if pinned is None else pinned.column, resolution)
            transformer.context_marginals = release_group_marginals(
                exact, sigma=self.plan.full_pass[CONTEXT_MARGINALS], rows_per_unit=k, rng=self.rng)
            self.record(CONTEXT_MARGINALS, len(exact), [f"{c}.by_context" for c in exact])
        return x


def settle_unreleased(cfg: CADASGConfig, names: list[str], std: float,
                      derived: tuple[DerivedColumn, ...]) -> tuple[str, ...]:
    """The columns to leave out of the model among those whose bounds could not be released
    (``names``): none, or an error naming every one, under ``privacy.unreleased_bounds: error``;
    all of them, with a warning, under "drop", unless one is the target, a context column or the
    source of a derived column. Decided from the noisy release alone: post-processing, no budget."""
    if not names:
        return ()
    needed = {cfg.target, *cfg.context.columns, *(d.of for d in derived)}
    kept = tuple(n for n in names if n in needed)
    if cfg.privacy.unreleased_bounds == "error" or kept:
        raise unreleased_bounds_error(names, std, kept=kept)
    log.warning("left out of the model and the synthetic table (privacy.unreleased_bounds=drop): %s; no magnitude "
                "bin holds enough rows to release their bounds under the noise; declare their min and max under "
                "data.columns to model them", ", ".join(map(repr, names)))
    return tuple(names)


def _need_bounds(columns: list[PrivateColumn]) -> list[PrivateColumn]:
    return [c for c in columns if c.lo is None and (c.kind in NUMERIC or c.coded)]


def released_transformer(cfg: CADASGConfig, schema: Schema, extractor: RuleContextExtractor,
                         columns: dict[str, PrivateColumn]) -> DataTransformer:
    """The transforms, set from the released statistics instead of fitted on rows."""
    transformer = DataTransformer(schema, cfg.data.continuous_encoding, cfg.data.n_quantiles,
                                  exclude=extractor.categorical_columns, atom_share=cfg.data.atom_share)
    for name, t in transformer.transforms.items():
        col = columns[name]
        if isinstance(t, ContinuousTransform):
            t.set_fitted(**col.fitted)
        elif col.histogram is not None:
            t.frequencies = released_frequencies(col.histogram, col.has_missing)
    transformer.relayout()  # atoms add spans
    return transformer


def target_class_groups(t: Any, n_contexts: int, n_rows: int, floor: float) -> list[int] | None:
    """A categorical target's thin classes merged into one model stratum each
    (``ModelDims.class_groups``). A stratum is a cell per context of the cache, the cell
    allocation, the decoder's stratum input and the class histograms; a class expected to hold
    fewer than ``floor`` rows per context (``privacy.merge_class_sds`` sds of the target's released
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


def private_extractor(cfg: CADASGConfig, schema: Schema, columns: dict[str, PrivateColumn]) -> RuleContextExtractor:
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
    label_sources = [columns[c].sources.get("categories", columns[c].sources.get("bounds")) for c in ex.columns]
    return ex.with_domain(keys, source="declared" if all(src == "declared" for src in label_sources) else "dp")


def _labels(cfg: CADASGConfig, col: PrivateColumn) -> list[Any]:
    if col.kind in ("categorical", "boolean"):
        labels = list(col.categories)
    elif col.kind == "datetime":
        freq = {"year": "Y", "quarter": "Q", "month": "M"}[cfg.context.periods[col.name]]
        span = pd.period_range(pd.Timestamp(col.lo, unit="s"), pd.Timestamp(col.hi, unit="s"), freq=freq)
        labels = list(dict.fromkeys(period_labels(pd.Series(span.to_timestamp()), cfg.context.periods[col.name])))
    else:
        edges = cfg.context.bands[col.name]
        bounds = [-math.inf, *edges, math.inf]
        reps = [max(a, col.lo) for a, b in zip(bounds, bounds[1:]) if a <= col.hi and b > col.lo]
        labels = list(dict.fromkeys(band_labels(np.asarray(reps, dtype=float), edges)))
    return labels + ([None] if col.has_missing else [])


def conform(df: pd.DataFrame, columns: list[PrivateColumn], transformer: DataTransformer) -> pd.DataFrame:
    """The table as the released schema sees it: numeric values clipped to their bounds, and a
    missing value in a column without a missing slot replaced (the median, or the noisy mode).
    Each row is changed on its own, from released quantities only: no extra cost."""
    out = df.copy()
    for col in columns:
        s = out[col.name]
        missing = s.isna()
        if col.kind == "datetime":
            x = numeric_values(s, col.kind)
            fill = transformer.transforms[col.name]._fill_value() if col.name in transformer.transforms else col.lo
            x = np.clip(np.where(np.isnan(x), np.nan if col.has_missing else fill, x), col.lo, col.hi)
            out[col.name] = pd.to_datetime(pd.Series(x * 1e9).round().astype("Int64"), errors="coerce").to_numpy()
        elif col.kind in NUMERIC:
            x = np.clip(numeric_values(s, col.kind), col.lo, col.hi)
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
