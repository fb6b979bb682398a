"""The federation plan: what every silo must share so that weights and caches add up.

All silos encode their rows with ONE schema, ONE set of transforms and ONE context domain, or
their networks and caches would not be compatible. ``FederationPlan`` holds them, and it is
public: it travels in every message and is saved in the artifact.

Privacy caveats first:

* The plan is built by ``build_round_plan`` from declarations (``data.columns``, ``context.bands``...)
  and a plan round over the silos (``federation.plan_round``, ``federation.plan_releases``): the
  releases of ``private.prepare.prepare_private`` (count, bounds, quantiles, point masses,
  missingness; in a private run also the histograms by class and by context that sampling's
  calibrations use, on at every epsilon here: ``federated_calibration``), each the secure sum of
  the silos' own statistics plus their shares of the Gaussian noise. No row leaves its silo; the
  server sees the noisy totals only. ``build_plan`` builds the same plan from pooled rows, as a
  trusted curator would (kept for comparison: bench/federated.py --plan pooled). In deployment
  mode the plan is a file the operator publishes (``federated/deploy.py`` builds it by a plan
  round over the silos' own files).
* A private run charges those releases to EVERY silo's ledger: each person was read once by them
  (each silo's plan party records them as it answers, ``PlanParty.spent``).
* A non-private run still releases its schema with DP, at ``federated.schema_epsilon``; the plan's
  ``schema_ledger`` records that release.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema, datetime_to_seconds
from cadasg_dist.data.transforms import DataTransformer
from cadasg_dist.data.values import CategoryMatcher
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.federation.config import FederatedConfig
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger

log = logging.getLogger(__name__)

PLAN_FORMAT = "cadasg-federation-plan"


@dataclass(frozen=True)
class FederationPlan:
    config: CADASGConfig  # with privacy.delta fixed, so every silo's ledger uses the same delta
    schema: Schema
    transformer: DataTransformer
    extractor: RuleContextExtractor
    dims: ModelDims
    preprocessing: tuple[Mechanism, ...]  # charged to every silo's ledger (private runs only)
    schema_ledger: dict[str, Any]  # the ledger of the releases that built the schema

    def silo_ledger(self) -> PrivacyLedger:
        """A silo's ledger at the start of training: the shared preprocessing releases."""
        if not self.config.private:
            return PrivacyLedger.non_private()
        ledger = PrivacyLedger(delta=self.config.privacy.delta)
        for m in self.preprocessing:
            ledger.record(name=m.name, noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate,
                          steps=m.steps, sensitivity=m.sensitivity)
        return ledger

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "config": self.config.to_dict(), "schema": self.schema.to_dict(),
                "transformer": self.transformer.to_dict(), "context": self.extractor.to_dict(),
                "dims": self.dims.to_dict(), "preprocessing": [m.to_dict() for m in self.preprocessing],
                "schema_ledger": self.schema_ledger}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FederationPlan:
        if d.get("format") != PLAN_FORMAT:
            raise InvalidDataError(f"not a federation plan (format {d.get('format')!r}, expected {PLAN_FORMAT!r})")
        schema = Schema.from_dict(d["schema"])
        return cls(config=CADASGConfig.from_dict(d["config"]), schema=schema,
                   transformer=DataTransformer.from_dict(schema, d["transformer"]),
                   extractor=RuleContextExtractor.from_dict(d["context"], schema),
                   dims=ModelDims.from_dict(d["dims"]),
                   preprocessing=tuple(Mechanism.from_dict(m) for m in d["preprocessing"]),
                   schema_ledger=d["schema_ledger"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_scalar)

    @classmethod
    def from_json(cls, text: str) -> FederationPlan:
        return cls.from_dict(json.loads(text))


def _json_scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot write {type(v).__name__} into a federation plan")


def federated_calibration(cfg: CADASGConfig) -> CADASGConfig:
    """``cfg`` with the per-class and per-context calibrations' "auto" resolved to "on" for a
    private federated run at any epsilon (explicit "on" / "off" are kept).

    A silo's DP-SGD samples its batches from its own rows only, so at the same epsilon it runs at
    a larger sampling rate, hence a larger noise multiplier, than a central fit, and what the
    federated model then gets wrong is how the features move with each class and context. The
    corrections (from histograms released once in the plan) put that back. Measured on one
    federated model of rwm5yr by year at epsilon 8 (docs/results/federated.md): utility ratio 0.861 ->
    0.975 with the per-class correction, 0.985 with both; a central model at epsilon 8 loses with
    the per-class one (0.892 -> 0.857), which is why the central "auto" stops at epsilon 3."""
    if not cfg.private:
        return cfg
    auto = {f"model.{key}": "on" for key in ("calibrate_classes", "calibrate_contexts")
            if getattr(cfg.model, key) == "auto"}
    return cfg.replace(**auto) if auto else cfg


def build_plan(df: pd.DataFrame, cfg: CADASGConfig, fed: FederatedConfig) -> FederationPlan:
    """The shared plan from declarations and DP releases over the POOLED rows ``df``: what a
    trusted curator would build (the federated runs build it with ``build_round_plan`` instead;
    the benchmark compares the two).

    Raises ``ConfigError`` listing what must be declared (text categories, numeric context
    columns) and ``PrivacyBudgetError`` when a bound cannot be released under the noise.
    """
    from cadasg_dist.private.prepare import prepare_private

    _check_columns(list(map(str, df.columns)), cfg)
    cfg, prep_cfg = _plan_configs(cfg, fed)
    return _plan(cfg, prepare_private(df, prep_cfg, merge_classes=cfg.private), "pooled")


def build_round_plan(parties: list[Any], cfg: CADASGConfig, fed: FederatedConfig) -> FederationPlan:
    """The shared plan from declarations and a plan round over the silos (``federation.plan_round``:
    each ``PlanParty`` holds one silo's rows and answers with its noisy statistics, the server sees
    their secure sum only). Same releases, shares and post-processing as ``build_plan``."""
    from cadasg_dist.federation.plan_releases import round_preparation

    if parties:
        _check_columns(list(parties[0].header()), cfg)
    cfg, prep_cfg = _plan_configs(cfg, fed)
    prep = round_preparation(parties, prep_cfg, mode=fed.plan_noise, merge_classes=cfg.private,
                             disjoint=fed.disjoint_units)
    return _plan(cfg, prep, f"plan round over {len(parties)} silos ({fed.plan_noise} noise)")


def _check_columns(names: list[str], cfg: CADASGConfig) -> None:
    for col in (*cfg.context.columns, *([cfg.target] if cfg.target else [])):
        if col not in names:
            raise InvalidDataError(f"unknown column {col!r}; columns: {', '.join(names)}")


def _plan_configs(cfg: CADASGConfig, fed: FederatedConfig) -> tuple[CADASGConfig, CADASGConfig]:
    """(the run's config, the releases' config). The run's own profile (a non-private federation
    releases its schema at schema_epsilon, but trains with the non-private defaults), resolved
    once: every silo trains with the plan's. The releases are sized as a silo's run would be:
    rounds * local_epochs epochs."""
    cfg = federated_calibration(cfg.resolved())
    prep_cfg = cfg.replace(**{"train.epochs": fed.rounds * fed.local_epochs})
    if not cfg.private:
        prep_cfg = prep_cfg.replace(**{"privacy.epsilon": fed.schema_epsilon})
    return cfg, prep_cfg


def _plan(cfg: CADASGConfig, prep: Any, how: str) -> FederationPlan:
    ledger = prep.ledger
    run_cfg = cfg.replace(**{"privacy.delta": ledger.delta}) if cfg.private else cfg
    log.info("federation plan (%s): %d features, %d contexts, schema released with epsilon=%.3f (delta=%.2e)",
             how, prep.transformer.output_dim, prep.extractor.n_contexts, ledger.epsilon(), ledger.delta)
    return FederationPlan(config=run_cfg, schema=prep.schema, transformer=prep.transformer,
                          extractor=prep.extractor, dims=prep.dims,
                          preprocessing=tuple(ledger.mechanisms) if cfg.private else (),
                          schema_ledger=ledger.state_dict())


@dataclass(frozen=True)
class SiloData:
    """One silo's rows as the model sees them. Never leaves the silo."""

    x: np.ndarray  # (N, D) encoded features
    context: np.ndarray  # (N,) context ids
    units: np.ndarray | None  # (N,) privacy unit index (0..U-1); None = one row per unit

    @property
    def n_rows(self) -> int:
        return len(self.x)

    @property
    def n_units(self) -> int:
        if self.units is None or len(self.units) == 0:
            return self.n_rows
        return int(self.units.max()) + 1


def encode_silo(plan: FederationPlan, df: pd.DataFrame, seed: int | None = None) -> SiloData:
    """Cap rows per privacy unit, conform the rows to the plan and encode them.

    Each row is changed (clipped to the plan's bounds) or dropped (a missing value where the plan
    has no missing slot) on its own, from public quantities only, so this costs no budget.
    ``seed`` drives the rows kept per unit and the tie spreading: in a private run it must be
    secret (the client draws it from the OS once and keeps it in its state, so that every round
    sees the same rows); None draws fresh OS entropy, and a non-private run uses ``train.seed``.
    """
    from cadasg_dist.privacy import entropy
    from cadasg_dist.private.sampling import cap_units

    cfg = plan.config
    if seed is None:
        seed = entropy.secret_seed() if cfg.private else cfg.train.seed
    rng = np.random.default_rng(seed)
    frame, units = cap_units(df, cfg, rng)
    frame, keep = conform(frame, plan.schema, report=not cfg.private)
    if units is not None:
        units = pd.factorize(units[keep])[0].astype(np.int64)
    if len(frame) == 0:
        if not cfg.private:
            raise InvalidDataError("this silo has no rows the federation plan can represent")
        # A private silo with no rows still trains (empty Poisson batches) and replies, so that
        # nothing but its noisy releases tells it apart (docs/guides/federated.md).
        empty = np.zeros((0, plan.transformer.output_dim), dtype=np.float32)
        return SiloData(x=empty, context=np.zeros(0, dtype=np.int64), units=units)
    x = plan.transformer.encode(frame, seed=int(rng.integers(2**62)))
    return SiloData(x=x, context=plan.extractor.ids(frame), units=units)


def conform(df: pd.DataFrame, schema: Schema, *, report: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows as the plan sees them: numeric values clipped to the plan's bounds, integer-coded
    categories rounded into their range, any other value outside a category set made missing (by
    value, never echoed), and rows with a missing value in a column without a missing slot dropped.
    Returns the frame and the kept positions. ``report`` logs how many rows were dropped: off in a
    private run, where that count is a statistic of the silo."""
    out = df.copy()
    keep = np.ones(len(df), dtype=bool)
    for col in schema.columns:
        if col.name not in out.columns:
            raise InvalidDataError(f"the silo's table lacks column {col.name!r} of the federation plan")
        s = out[col.name]
        if col.categories and not _integer_coded(col.categories, s):
            s = out[col.name] = CategoryMatcher(col.categories).conform(s)
        missing = s.isna().to_numpy()
        if not col.has_missing:
            keep &= ~missing
        if col.kind == "datetime":
            x = np.clip(datetime_to_seconds(s), col.min, col.max)
            out[col.name] = pd.to_datetime(pd.Series(x * 1e9, index=s.index).round().astype("Int64"), errors="coerce")
        elif col.kind in ("continuous", "integer"):
            out[col.name] = np.clip(pd.to_numeric(s, errors="coerce").to_numpy(dtype=float), col.min, col.max)
        elif col.categories and _integer_coded(col.categories, s):
            lo, hi = min(col.categories), max(col.categories)
            values = np.clip(np.round(pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)), lo, hi)
            out[col.name] = pd.Series([None if np.isnan(v) else int(v) for v in values], index=s.index, dtype=object)
    dropped = int((~keep).sum())
    if dropped and report:
        log.info("dropped %d rows with a missing value where the federation plan has no missing slot", dropped)
    positions = np.flatnonzero(keep)
    return out.iloc[positions].reset_index(drop=True), positions


def _integer_coded(categories: tuple[Any, ...], s: pd.Series) -> bool:
    """Integer categories over a numeric (not boolean) column: values are rounded into the range."""
    return (all(isinstance(c, int) and not isinstance(c, bool) for c in categories)
            and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def plan_replace_config(plan: FederationPlan, **dotted: Any) -> FederationPlan:
    """The plan with config values replaced (e.g. a test's seed); the schema is unchanged."""
    return dataclasses.replace(plan, config=plan.config.replace(**dotted))
