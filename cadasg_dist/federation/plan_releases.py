"""The federation plan from a plan round over the silos, never from pooled rows.

The same releases, budget shares and post-processing as a central run's preprocessing
(``private.prepare.prepare_private``), stage by stage, with every statistic a secure sum of the
silos' noisy statistics (``federation.plan_round``):

1. the header (column names and storage dtypes: public metadata) and the declarations give the
   columns, their declared kinds, categories and bounds;
2. ``preprocess/count``: the sum of the silos' noisy count vectors (the one count release's
   layout, ``private.releases.count_vector``) is the plan's size n-hat, from which the budget
   shares and δ are planned;
3. ``preprocess/bounds`` (columns without declared bounds): the summed magnitude histograms;
4. ``preprocess/histograms``: the summed per-column histograms (quantile grids, point masses,
   missingness, category frequencies);
5. ``preprocess/class_marginals`` and ``preprocess/context_marginals`` when the calibrations are
   on: the summed per-stratum and per-context histograms of each silo's encoded rows.

Every threshold, bound and grid is then set by the central run's own post-processing functions
(``settle_bounds``, ``settle_histogram``, ``settle_count``...) on the noisy totals, with the
total's noise sd (σ times sensitivity, times √k under ``federated.plan_noise: full``).

Privacy caveat: each silo caps a privacy unit's rows (``privacy.max_rows_per_unit``) on its own,
as its training does. With a privacy unit that may have rows in several silos (the default,
``federated.disjoint_units: false``) one unit can move every total by up to k silos' worth, so
every release is scaled to that sensitivity (k times the noise for the same ε); row-level privacy
or units declared disjoint keep one silo's bound, the pooled plan's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema, declared_derived, output_order
from cadasg_dist.data.transforms import DataTransformer
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.federation.plan_round import PlanParty, SecureSum, noise_share
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger
from cadasg_dist.private.budget import CLASS_MARGINALS, CONTEXT_MARGINALS, COUNT, count_sigma, plan_budget
from cadasg_dist.private.columns import (
    PrivateColumn,
    check_declarations,
    read_columns,
    settle_kind,
    unit_data_config,
)
from cadasg_dist.private.prepare import (
    _need_bounds,
    released_layout,
    settle_unreleased,
)
from cadasg_dist.private.releases import column_counts, settle_bounds, settle_count, settle_histogram, value_resolution


@dataclass(frozen=True)
class RoundPreparation:
    """What ``build_plan`` takes from a preparation, built by the plan round."""

    schema: Schema
    extractor: RuleContextExtractor
    transformer: DataTransformer
    dims: ModelDims
    ledger: PrivacyLedger
    released: dict[str, list[str]]


def pooled_header(headers: dict[str, dict[str, str]]) -> pd.DataFrame:
    """An empty frame with the silos' columns and a common storage dtype per column (the same
    dtype for all, else float64 over numeric dtypes, else object): what ``read_columns`` reads."""
    names = list(headers)
    first = list(headers[names[0]])
    for name in names[1:]:
        if list(headers[name]) != first:
            raise InvalidDataError(f"silo {name!r} does not have the columns of silo {names[0]!r} "
                                   "(the same names in the same order)")
    out = {}
    for col in first:
        dtypes = [headers[n][col] for n in names]
        dtype = dtypes[0] if len(set(dtypes)) == 1 else "float64" if all(map(_numeric, dtypes)) else "object"
        out[col] = pd.Series([], dtype=dtype)
    return pd.DataFrame(out)


def _numeric(dtype: str) -> bool:
    try:
        t = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)


class _Round:
    """The server's running state of the plan round: budget plan, ledger, noisy totals."""

    def __init__(self, cfg: CADASGConfig, channel: SecureSum, header: pd.DataFrame, n_silos: int, mode: str,
                 disjoint: bool) -> None:
        self.cfg, self.channel, self.header = cfg, channel, header
        self.k = 1 if cfg.privacy.unit is None else cfg.privacy.max_rows_per_unit
        # Each silo caps a unit's rows on its own, so a unit that may span the k silos can move every
        # total by k times a silo's bound: the releases are scaled to that sensitivity (a pooled plan
        # capped the unit once). Row-level privacy, or units declared disjoint: one silo's bound.
        self.spread = 1 if cfg.privacy.unit is None or disjoint else n_silos
        self.inflate = math.sqrt(n_silos) if mode == "full" else 1.0  # the total's sd over the release's
        self.released: dict[str, list[str]] = {}

    def count(self, columns: list[PrivateColumn]) -> None:
        cfg = self.cfg
        sigma = count_sigma(cfg.privacy.epsilon, cfg.privacy.count_share)
        sensitivity = self.spread * (1.0 if cfg.privacy.unit is None else math.sqrt(2.0))
        mech = Mechanism(name=COUNT, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        noisy = self.channel.total("count", mech, {"rows_per_unit": self.k})
        self.n_rows, self.n_units = settle_count(noisy, self.k)
        names = ((["preprocess/bounds"] if _need_bounds(columns) else []) + ["preprocess/histograms"]
                 + ([CLASS_MARGINALS] if cfg.target is not None and cfg.class_calibration else [])
                 + ([CONTEXT_MARGINALS] if cfg.context_calibration else []))
        self.plan = plan_budget(cfg, n_rows=self.n_rows, n_units=self.n_units, has_utility=cfg.target is not None,
                                preprocessing=names, spent=[mech])
        self.ledger = PrivacyLedger(delta=self.plan.delta)
        self.ledger.record(name=COUNT, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        self.released[COUNT] = ["rows", "units"]

    def release(self, name: str, stage: str, count: int, public: dict[str, Any], statistics: list[str]
                ) -> tuple[np.ndarray, float]:
        """(the noisy total of ``stage``, its count sd), recorded in the plan's ledger."""
        sigma, sensitivity = self.plan.full_pass[name], self.spread * self.k * math.sqrt(count)
        mech = Mechanism(name=name, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        total = self.channel.total(stage, mech, public)
        self.ledger.record(name=name, noise_multiplier=sigma, sample_rate=1.0, sensitivity=sensitivity)
        self.released[name] = statistics
        return total, sigma * sensitivity * self.inflate

    def columns(self, columns: list[PrivateColumn], derived: tuple[Any, ...]) -> tuple[list[PrivateColumn], float,
                                                                                       tuple[str, ...]]:
        cfg = self.cfg
        need, left_out = _need_bounds(columns), ()
        if need:
            total, std = self.release("preprocess/bounds", "bounds", len(need), {"columns": need},
                                      [f"{c.name}.bounds" for c in need])
            parts = np.split(total, len(need))
            unreleased = [c.name for c, part in zip(need, parts) if not settle_bounds(c, part, std)]
            left_out = settle_unreleased(cfg, unreleased, std, derived)
            columns = [c for c in columns if c.name not in left_out]
            if not columns:
                raise InvalidDataError("no column is left to model once the columns without released bounds "
                                       f"are left out ({', '.join(map(repr, left_out))}); declare their bounds")
        for col in columns:
            settle_kind(col, cfg.data.max_categories, cfg.target)
        bins = cfg.privacy.histogram_bins
        sizes = [len(column_counts(self.header, c, bins)) for c in columns]  # the public layout
        total, std = self.release("preprocess/histograms", "histograms", len(columns),
                                  {"columns": columns, "bins": bins}, [])
        for col, part in zip(columns, np.split(total, np.cumsum(sizes)[:-1])):
            settle_histogram(col, part, std, bins=bins, n_quantiles=cfg.data.n_quantiles,
                             atom_share=cfg.data.atom_share)
        self.released["preprocess/histograms"] = [
            f"{c.name}.{s}" for c in columns for s in ("missing", *c.fitted, *(("frequencies",)
                                                                             if c.histogram is not None else ()))]
        return columns, std, left_out

    def marginals(self, columns: list[PrivateColumn], transformer: DataTransformer, extractor: RuleContextExtractor,
                  dims: ModelDims) -> None:
        cfg = self.cfg
        by_stratum = cfg.target is not None and cfg.class_calibration and dims.strata > 1
        resolution = {c.name: value_resolution(c, cfg.privacy.histogram_bins) for c in columns
                      if c.categories is None and c.lo is not None}
        public: dict[str, Any] = {"transformer": transformer, "dims": dims, "resolution": resolution,
                                  "n_contexts": extractor.n_contexts,
                                  "pinned": None if dims.strata_span is None else dims.strata_span.column}
        empty = np.zeros((0, transformer.output_dim), dtype=np.float32)
        if by_stratum:
            from cadasg_dist.model.histograms import class_counts

            shapes = {k: v.shape for k, v in class_counts(empty, transformer, dims, resolution).items()}
            transformer.class_marginals = self._marginal(CLASS_MARGINALS, "class_marginals", shapes, public,
                                                         f".by_{cfg.target}")
        if cfg.context_calibration:
            from cadasg_dist.model.histograms import context_counts

            shapes = {k: v.shape for k, v in context_counts(empty, transformer, np.zeros(0, dtype=np.int64),
                                                            extractor.n_contexts, public["pinned"],
                                                            resolution).items()}
            transformer.context_marginals = self._marginal(CONTEXT_MARGINALS, "context_marginals", shapes, public,
                                                           ".by_context")

    def _marginal(self, name: str, stage: str, shapes: dict[str, tuple[int, ...]], public: dict[str, Any],
                  suffix: str) -> dict[str, Any]:
        keys = list(shapes)
        total, std = self.release(name, stage, len(keys), {**public, "keys": keys}, [f"{k}{suffix}" for k in keys])
        sizes = [int(np.prod(shapes[k])) for k in keys]
        parts = np.split(total, np.cumsum(sizes)[:-1]) if keys else []
        return {"std": std, "counts": {k: part.reshape(shapes[k]).tolist() for k, part in zip(keys, parts)}}


def round_preparation(parties: list[PlanParty], cfg: CADASGConfig, *, mode: str = "split",
                      merge_classes: bool = True, disjoint: bool = False) -> RoundPreparation:
    """The plan round over ``parties`` (one per silo): schema, contexts, transforms, dimensions and
    the ledger of the releases, as ``prepare_private`` builds them from pooled rows. ``disjoint``:
    the privacy units are declared disjoint across silos (``federated.disjoint_units``); else, with
    a privacy unit, every release's sensitivity is scaled by the number of silos (see ``_Round``)."""
    if len(parties) < 2:
        raise InvalidDataError(f"a plan round needs two silos or more, got {len(parties)}")
    channel = SecureSum(parties)
    header = pooled_header({p.name: p.header() for p in parties})
    data_cfg = unit_data_config(cfg)
    columns, dropped = read_columns(header, data_cfg, cfg)
    derived = declared_derived(header, data_cfg)
    check_declarations(columns, cfg)
    share = noise_share(mode, len(parties))
    for p in parties:
        p.start(cfg, columns, share)
    rnd = _Round(cfg, channel, header, len(parties), mode, disjoint)
    rnd.count(columns)
    columns, hist_std, left_out = rnd.columns(columns, derived)
    schema, extractor, transformer, dims = released_layout(
        cfg, output_order(header, data_cfg), columns, tuple(dropped), tuple(left_out), derived, rnd.n_rows,
        hist_std if merge_classes else None)
    encode = (cfg.target is not None and cfg.class_calibration and dims.strata > 1) or cfg.context_calibration
    for p in parties:
        p.settle(columns, transformer, extractor, bool(encode))
    rnd.marginals(columns, transformer, extractor, dims)
    for p in parties:  # each silo's own record of what it answered: the plan's releases, nothing else
        if [m.to_dict() for m in p.spent] != [m.to_dict() for m in rnd.ledger.mechanisms]:
            raise InvalidDataError(f"silo {p.name!r} recorded other releases than the plan round's")
    return RoundPreparation(schema, extractor, transformer, dims, rnd.ledger, rnd.released)
