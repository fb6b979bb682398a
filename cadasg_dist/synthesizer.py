"""``CADASG``: fit on a table, sample synthetic rows per context, save and load.

    >>> import tempfile
    >>> from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig
    >>> from cadasg_dist.datasets import load_rwm5yr
    >>> df = load_rwm5yr().drop(columns=["id"])
    >>> config = CADASGConfig(target="hospvis", context=ContextConfig(columns=("year", "female")),
    ...                       train=TrainConfig(epochs=1))
    >>> model = CADASG(config).fit(df)
    >>> rows = model.sample(1000, context={"female": 1}, seed=7)
    >>> path = model.save(tempfile.mkdtemp() + "/rwm")
    >>> CADASG.load(path).sample(1000, context={"female": 1}, seed=7).equals(rows)
    True

Sampling for a context c draws z from the cache's q_c(z) and decodes it with c: a minority
context is generated directly, never by rejection. A partial context (some context columns
fixed) spreads rows over the matching contexts in proportion to their (noisy) cache counts.

Privacy: sampling reads only the model and the cache, so it is post-processing and spends no
budget. What ``fit`` reads is listed in ``docs/concepts/privacy.md`` and recorded in the ledger.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from cadasg_dist._version import __version__
from cadasg_dist.artifact import FORMAT, FORMAT_VERSION, load_artifact, save_artifact
from cadasg_dist.config import CADASGConfig, ColumnOverride, ConstraintConfig, ContextConfig
from cadasg_dist.constraints import ConstraintSet, build_constraints, with_entries
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.codebook import Codebook
from cadasg_dist.data.io import read_table
from cadasg_dist.data.schema import Schema, infer_schema
from cadasg_dist.data.transforms import DataTransformer
from cadasg_dist.errors import ArtifactError, ContextError, InvalidDataError
from cadasg_dist.model.histograms import class_counts, context_counts
from cadasg_dist.model.networks import CADASGNetworks, ModelDims, model_dims
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.sampling.api import Sampling, read_parts
from cadasg_dist.sampling.draw import Sampler
from cadasg_dist.sampling.fold import build_pack
from cadasg_dist.sampling.pack import SamplingPack
from cadasg_dist.train.fit import ProgressFn, fit_local
from cadasg_dist.train.loop import new_cache

if TYPE_CHECKING:
    from cadasg_dist.private.prepare import PrivatePreparation

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A table ready to train on, as ``CADASG.prepare`` returns it: the config (``resolved``),
    schema, contexts, transforms, the encoded rows and the model's dimensions; in a private run also
    ``private``: the capped rows' units, the preprocessing ledger and the run's one budget plan."""

    config: CADASGConfig
    schema: Schema
    extractor: RuleContextExtractor
    transformer: DataTransformer
    x: np.ndarray  # (N, D) encoded rows
    ids: np.ndarray  # (N,) context ids
    dims: ModelDims
    private: PrivatePreparation | None = None


class CADASG(Sampling):
    def __init__(self, config: CADASGConfig | None = None) -> None:
        self.config = config or CADASGConfig()
        self.schema: Schema | None = None
        self.extractor: RuleContextExtractor | None = None
        self.transformer: DataTransformer | None = None
        self.nets: CADASGNetworks | None = None
        self.cache: ContextCache | None = None
        self.ledger: PrivacyLedger = PrivacyLedger.non_private()
        self.history: list[dict[str, float]] = []
        self.meta: dict[str, Any] = {}
        self._sampler: Sampler | None = None
        self._pack: SamplingPack | None = None
        self.last_seed: int | None = None  # the seed of the last draw (fresh when none was given)
        self._constraints: ConstraintSet | None = None


    # --- fitting ---------------------------------------------------------------------------
    def prepare(self, data: pd.DataFrame | str | Path, *, context: list[str] | tuple[str, ...] | None = None,
                target: str | None = None, codebook: Codebook | str | Path | None = None) -> Prepared:
        """Infer (or, in a private run, release) schema, contexts and transforms, encode the table
        and plan the privacy budget; every runner starts from the ``Prepared`` this returns.

        ``codebook`` (a ``Codebook`` or its YAML file): declarations merged into ``data.columns``,
        the config's own entries winning (``Codebook.apply_to``); declared, so public and free."""
        df = read_table(data) if isinstance(data, str | Path) else data
        if df.shape[0] == 0:
            raise InvalidDataError("the table has no rows")
        # the defaults that depend on privacy (model sizes, clips, batch), before anything reads them
        self.config = cfg = fit_config(self.config, context, target, codebook, df).resolved()
        _check_columns(df, cfg)
        if cfg.private:  # from declarations and DP releases only; rows capped per privacy unit
            from cadasg_dist.private.prepare import prepare_private

            prep = prepare_private(df, cfg)
            self.schema, self.extractor, self.transformer = prep.schema, prep.extractor, prep.transformer
            df = prep.frame
        else:
            prep = None
            self.schema = infer_schema(df, cfg.data)
            if cfg.target is not None and cfg.target in self.schema.dropped:
                raise InvalidDataError(f"target column {cfg.target!r} is declared an identifier")
            self.extractor = RuleContextExtractor(cfg.context, self.schema).fit(df)
            if cfg.target is not None and cfg.target in self.extractor.categorical_columns:
                raise InvalidDataError(f"target column {cfg.target!r} cannot also be a context column")
            self.transformer = DataTransformer(self.schema, cfg.data.continuous_encoding, cfg.data.n_quantiles,
                                               exclude=self.extractor.categorical_columns,
                                               atom_share=cfg.data.atom_share).fit(df)
        # the declared constraints checked against the table before training (rows read only without DP)
        self._constraints = build_constraints(cfg, self.schema, self.extractor, None if prep is not None else df)
        self.config = cfg = cfg.resolved(len(df))  # automatic epochs
        if prep is not None:
            # encoded already when a release needed it; the tie spreading's seed is secret, like all noise
            x = prep.encoded if prep.encoded is not None else self.transformer.encode(df, seed=prep.encode_seed)
            dims = prep.dims
        else:
            x = self.transformer.encode(df, seed=cfg.train.seed)
            dims = model_dims(self.transformer.output_dim, self.transformer.spans, self.extractor.n_contexts,
                              cfg.target, cfg.model)
        ids = self.extractor.ids(df)
        if prep is None:  # exact: a non-private fit reads the rows (a private one released them)
            self._exact_marginals(x, ids, dims)
        return Prepared(cfg, self.schema, self.extractor, self.transformer, x, ids, dims, prep)

    def _exact_marginals(self, x: np.ndarray, ids: np.ndarray, dims: ModelDims) -> None:
        cfg, t = self.config, self.transformer
        t.class_marginals = t.context_marginals = None
        if dims.strata > 1 and cfg.class_calibration:
            counts = class_counts(x, t, dims)
            t.class_marginals = {"std": 0.0, "counts": {k: v.tolist() for k, v in counts.items()}}
        if cfg.context_calibration:
            span = dims.strata_span
            counts = context_counts(x, t, ids, self.extractor.n_contexts, None if span is None else span.column)
            t.context_marginals = {"std": 0.0, "counts": {k: v.tolist() for k, v in counts.items()}}

    def fit(self, data: pd.DataFrame | str | Path, *, context: list[str] | tuple[str, ...] | None = None,
            target: str | None = None, progress: ProgressFn | None = None,
            codebook: Codebook | str | Path | None = None) -> CADASG:
        """Train on ``data`` (a DataFrame or a CSV/Parquet path), with the declarations of
        ``codebook`` if given (see ``prepare``). Returns ``self``."""
        start = time.perf_counter()
        return self.fit_prepared(self.prepare(data, context=context, target=target, codebook=codebook), progress,
                                 started=start)

    def fit_prepared(self, prepared: Prepared, progress: ProgressFn | None = None, *,
                     started: float | None = None) -> CADASG:
        """Train in this process on what ``prepare`` returned (privately when the config says so,
        under ``prepared.plan``). Returns ``self``."""
        start = time.perf_counter() if started is None else started
        cfg, p = prepared.config, prepared
        if cfg.private:
            from cadasg_dist.private.fit import fit_private

            state, cache, ledger = fit_private(cfg, p.x, p.ids, p.dims, p.schema, progress, units=p.private.units,
                                               ledger=p.private.ledger, plan=p.private.plan)
        else:
            state, cache = fit_local(cfg, p.x, p.ids, p.dims, progress)
            ledger = PrivacyLedger.non_private()
        rows = len(p.x) if p.private is None else int(p.private.plan.n_rows)  # private: the released count
        return self.assemble(state.nets, cache, state.history, ledger=ledger, seconds=time.perf_counter() - start,
                             rows=rows, privacy=None if state.dp is None else state.dp.report())

    def assemble(self, nets: CADASGNetworks, cache: ContextCache, history: list[dict[str, float]], *,
                 ledger: PrivacyLedger, seconds: float, rows: int, privacy: dict[str, Any] | None = None) -> CADASG:
        """Make this (prepared) model the one trained by a runner: its networks, cache, history and
        ledger, and the artifact's metadata (``privacy``: the DP state's report). Returns ``self``."""
        self.nets, self.cache, self.history = nets.cpu().eval(), cache, history  # sampling runs on the CPU
        self.ledger = ledger
        self._sampler = self._pack = None
        self.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "cadasg_version": __version__,
                     "torch_version": torch.__version__, "created": datetime.now(UTC).isoformat(),
                     "fit_seconds": round(seconds, 3), "training_rows": rows,
                     "private": self.ledger.private, "epochs": len(history)}
        if privacy is not None:  # the calibrated noise, steps taken, and whether training stopped early
            self.meta["privacy"] = privacy
        return self

    # --- sampling (``sampling.api.Sampling``: sample, sample_remaining, sample_to_file, ...) ----
    def _require_fitted(self) -> None:
        if self.nets is None:
            raise ContextError("the model is not trained: call fit() or CADASG.load() first")

    @property
    def dims(self) -> ModelDims:
        self._require_fitted()
        return self.nets.dims

    def _sampling_pack(self) -> SamplingPack:
        """The pack the sampler runs on: loaded with the model, or folded from its networks."""
        if self._pack is None:
            self._pack = build_pack(self.nets, self.cache, self.config.model.latent_dim)
        return self._pack

    # --- constraints -----------------------------------------------------------------------
    def add_constraints(self, *entries: ConstraintConfig | dict[str, Any]) -> CADASG:
        """Declare more constraints (``ConstraintConfig`` or its keys as a dict); returns ``self``.

        Before ``fit`` they join the config and are checked at fit. On a fitted model they are
        checked against its schema now and hold from the next ``sample``; a ``combinations`` entry
        must then list ``allowed`` (the table is not at hand). Either way they are saved with it."""
        config, self._constraints = with_entries(self.config, entries, self.constraints, self.schema, self.extractor)
        self.config = config
        return self

    # --- persistence -----------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write the model artifact (``artifact.py``): networks, cache, the plain-data parts and the
        sampling pack, its calibration fitted first so a loaded model samples without torch."""
        self._require_fitted()
        epsilon = {"epsilon": self.epsilon} if self.ledger.private else {}  # printing it needs no accountant
        json_parts = {
            "config": self.config.to_dict(), "schema": self.schema.to_dict(),
            "transformer": self.transformer.to_dict(), "context": self.extractor.to_dict(),
            "dims": self.nets.dims.to_dict(), "ledger": self.ledger.state_dict(),
            "meta": {**self.meta, "history": self.history, **epsilon},  # every epoch: ``loss_history()`` after ``load``
        }
        if self.constraints:
            json_parts["constraints"] = self.constraints.to_dict()
        self.sampler.calibration()
        json_parts["sampler"], pack = self.sampler.pack.to_parts()
        arrays = {name: {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}
                  for name, state in (("model", self.nets.state_dict()), ("cache", self.cache.state_dict()))}
        return save_artifact(out_dir, json_parts=json_parts, tensor_parts={**arrays, "sampler": pack})

    @classmethod
    def load(cls, model_dir: str | Path) -> CADASG:
        parts, tensors = load_artifact(model_dir)
        model = cls()
        try:
            dims = read_parts(model, parts, tensors)
            model.nets = CADASGNetworks(dims, model.config.model)
            model.nets.load_state_dict({k: torch.from_numpy(v) for k, v in tensors["model"].items()})
            model.nets.eval()
            model.cache = new_cache(dims, model.config)
            model.cache.load_state_dict({k: torch.from_numpy(v) for k, v in tensors["cache"].items()})
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{model_dir}: inconsistent artifact ({type(exc).__name__}: {exc})") from None
        return model



def _check_columns(df: pd.DataFrame, cfg: CADASGConfig) -> None:
    """The target and context columns exist and are modelled."""
    for col in cfg.context.columns:
        if col not in df.columns:
            raise InvalidDataError(f"unknown context column {col!r}; columns: {', '.join(map(str, df.columns))}")
    if cfg.target is not None and cfg.target not in df.columns:
        raise InvalidDataError(f"unknown target column {cfg.target!r}; columns: {', '.join(map(str, df.columns))}")
    for col in (cfg.target, *cfg.context.columns):
        if col is not None and cfg.data.columns.get(col, ColumnOverride()).kind == "derived":
            raise InvalidDataError(f"column {col!r} is declared derived, so it is not modelled: it cannot be the "
                                   f"target or a context column; use the column it is derived from instead")


def fit_config(config: CADASGConfig, context: list[str] | None, target: str | None,
               codebook: Codebook | str | Path | None = None, df: pd.DataFrame | None = None) -> CADASGConfig:
    """Merge API arguments into a config (used by the CLI and tests); a codebook last, after a
    check that it declares no column the table (``df``) lacks."""
    if context is not None:
        config = config.replace(**{"context.columns": list(context)})
    if target is not None:
        config = config.replace(target=target)
    if codebook is not None:
        book = Codebook.load(codebook)
        absent = [name for name in book.names if df is not None and name not in set(map(str, df.columns))]
        if absent:
            raise InvalidDataError(f"the codebook declares column {absent[0]!r}, which the table does not have "
                                   f"({len(absent)} such); `cadasg schema DATA --check CODEBOOK` lists every "
                                   "difference")
        config = book.apply_to(config)
    return config


__all__ = ["CADASG", "ContextConfig"]
