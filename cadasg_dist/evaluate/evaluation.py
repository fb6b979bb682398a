"""``evaluate``: fidelity, utility and privacy of a synthetic table against the real one.

Privacy: evaluation reads real rows (holdout and, when given, the training rows) and its output
describes them: frequencies, per-context scores of small groups, distances to individual training
records. The result is NOT privacy-protected. It is for the data owner, not for release; and if
its numbers are used to choose between models or settings, that choice spends privacy which the
model's ledger does not record and would have to be charged.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cadasg_dist.data.schema import Schema, infer_schema
from cadasg_dist.errors import ConfigError, ContextError, InvalidDataError
from cadasg_dist.evaluate import contexts as ctx
from cadasg_dist.evaluate import distribution as dist
from cadasg_dist.evaluate import privacy_metrics as pm
from cadasg_dist.evaluate.features import encode, fit_encoder, widened_schema
from cadasg_dist.evaluate.fidelity import all_pairs, fidelity_scores
from cadasg_dist.evaluate.prepare import check_columns, context_ids, joint_views
from cadasg_dist.evaluate.result import EvaluationResult, FidelityResult, PrivacyResult
from cadasg_dist.evaluate.utility import measure_utility

logger = logging.getLogger(__name__)

TEST_ROWS_FACTOR = 5  # the utility test set is capped at this many times max_rows
# BLAS / OpenMP threads during evaluation. Measured on a shared 2-core machine: with the default
# (one thread per core) a gradient-boosting fit ran 6-60x slower whenever other processes were
# busy, because OpenMP threads spin-wait for each other; single-threaded it never degraded, and
# the distance metrics were as fast or faster. The limit is lifted when evaluate() returns.
EVAL_THREADS = 1


def evaluate(real: pd.DataFrame, synthetic: pd.DataFrame, *, target: str | None = None,
             context: list[str] | tuple[str, ...] = (), train: pd.DataFrame | None = None,
             schema: Schema | None = None, privacy: dict[str, Any] | None = None, seed: int = 0,
             max_rows: int = 20000) -> EvaluationResult:
    """Measure ``synthetic`` against ``real`` (the HOLDOUT rows the generator never saw).

    Privacy: the result describes real rows and is NOT privacy-protected; see the module doc.

    ``train`` is the table the generator was fitted on: the train-on-real utility baseline and the
    privacy metrics need it (without it the baseline is fitted on half of ``real`` and the privacy
    metrics are skipped, with a note). ``schema`` defaults to ``infer_schema(real)``. ``privacy`` is
    the model's ledger summary, ``{"epsilon": float | inf, "delta": float | None}``. Tables larger
    than ``max_rows`` are subsampled for the costly metrics (listed in ``result.subsampled``).

    Raises ``InvalidDataError`` for tables that do not match the schema (naming the columns),
    ``ContextError`` for an unknown context column, ``ConfigError`` for bad arguments.
    """
    started = time.perf_counter()
    context = tuple(context)
    _check_arguments(real, synthetic, train, target, context, max_rows)
    schema = schema.evaluation_schema() if schema is not None else infer_schema(real)
    check_columns(schema, real, synthetic, train)
    kinds = {c.name: c.kind for c in schema.columns}
    _check_names(kinds, target, context)
    eps, delta = _ledger(privacy)
    with threadpool_limits(limits=EVAL_THREADS):
        return _measure(real, synthetic, train, schema, kinds, target, context, eps, delta, seed, max_rows, started)


def _measure(real: pd.DataFrame, synthetic: pd.DataFrame, train: pd.DataFrame | None, schema: Schema,
             kinds: dict[str, str], target: str | None, context: tuple[str, ...], eps: float | None,
             delta: float | None, seed: int, max_rows: int, started: float) -> EvaluationResult:
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    subsampled: dict[str, str] = {}
    pos_r = _positions(len(real), max_rows, rng, "real", subsampled)
    pos_s = _positions(len(synthetic), max_rows, rng, "synthetic", subsampled)
    real_s, syn_s = _rows(real, pos_r), _rows(synthetic, pos_s)
    views_r, views_s = joint_views(kinds, real_s, syn_s)
    pairs, pairs_sampled = all_pairs(list(kinds), rng)
    if pairs_sampled:
        notes.append(f"pair_trend averages a fixed-seed sample of {len(pairs)} column pairs")
    frames = [real, synthetic] + ([train] if train is not None else [])
    encoder = fit_encoder(widened_schema(schema, frames), real_s)
    x_real, x_syn = encode(encoder, real_s), encode(encoder, syn_s)
    fidelity = _fidelity(views_r, views_s, pairs, pairs_sampled, x_real, x_syn, rng, subsampled)
    (ids_r, ids_s), keys = context_ids(kinds, list(context), [real, synthetic])
    counts_r = np.bincount(ids_r, minlength=len(keys))
    counts_s = np.bincount(ids_s, minlength=len(keys))
    per_context = ctx.per_context_fidelity(views_r, views_s, context=context, keys=keys, ids_r=ids_r[pos_r],
                                           ids_s=ids_s[pos_s], counts_r=counts_r, counts_s=counts_s, pairs=pairs)
    utility = _utility(real, synthetic, train, target, kinds, ids_r, keys, seed, max_rows, rng, notes, subsampled)
    priv = _privacy(train, real, synthetic, kinds, encoder, x_real, x_syn, eps, delta, rng, max_rows, subsampled)
    notes.extend(priv.notes)
    elapsed = time.perf_counter() - started
    logger.info("evaluation of %d synthetic vs %d real rows took %.1f s", len(synthetic), len(real), elapsed)
    return EvaluationResult(
        fidelity=fidelity, per_context=per_context,
        context_frequency_tv=ctx.context_frequency_tv(counts_r, counts_s) if context else None,
        target_rates=(ctx.target_rates(real[target], synthetic[target], kinds[target])
                      if target is not None and utility is not None and utility.task == "classification" else None),
        utility=utility, privacy=priv, subsampled=subsampled, elapsed_s=elapsed, n_real=len(real),
        n_synthetic=len(synthetic), n_train=None if train is None else len(train), target=target,
        context=context, column_kinds=kinds, seed=seed, notes=tuple(notes))


def _check_arguments(real: Any, synthetic: Any, train: Any, target: str | None, context: tuple[str, ...],
                     max_rows: int) -> None:
    for label, df in (("real", real), ("synthetic", synthetic), ("train", train)):
        if df is not None and not isinstance(df, pd.DataFrame):
            raise ConfigError(f"{label} must be a pandas DataFrame, not {type(df).__name__}")
    if not isinstance(max_rows, int) or max_rows < 100:
        raise ConfigError(f"max_rows must be an integer of at least 100, not {max_rows!r}")
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"target must be a column name, not {target!r}")
    if len(set(context)) != len(context):
        raise ContextError(f"context names a column twice: {', '.join(context)}")


def _check_names(kinds: dict[str, str], target: str | None, context: tuple[str, ...]) -> None:
    if target is not None and target not in kinds:
        raise InvalidDataError(f"unknown target column {target!r}; columns: {', '.join(kinds)}")
    unknown = [c for c in context if c not in kinds]
    if unknown:
        raise ContextError(f"unknown context column {unknown[0]!r}; columns: {', '.join(kinds)}")


def _ledger(privacy: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(epsilon, delta) from a ledger summary; "inf" (or Infinity) means not private."""
    if privacy is None:
        return None, None
    if not isinstance(privacy, dict):
        raise ConfigError(f"privacy must be a dict like {{'epsilon': 1.0, 'delta': 1e-5}}, not {privacy!r}")
    out = []
    for key in ("epsilon", "delta"):
        value = privacy.get(key)
        try:
            value = None if value is None else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"privacy[{key!r}] must be a number or 'inf', not {value!r}") from None
        if value is not None and (math.isnan(value) or value < 0):
            raise ConfigError(f"privacy[{key!r}] must be a non-negative number, not {value!r}")
        out.append(value)
    return out[0], out[1]


def _positions(n: int, limit: int, rng: np.random.Generator, label: str, notes: dict[str, str]) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    notes[f"fidelity_{label}"] = f"column, pair, per-context and encoded metrics use {limit} of {n} {label} rows"
    return np.sort(rng.choice(n, size=limit, replace=False))


def _rows(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return df.iloc[positions].reset_index(drop=True)


def _fidelity(views_r: dict, views_s: dict, pairs: list[tuple[str, str]], pairs_sampled: bool,
              x_real: np.ndarray, x_syn: np.ndarray, rng: np.random.Generator,
              subsampled: dict[str, str]) -> FidelityResult:
    columns, pair_scores = fidelity_scores(views_r, views_s, pairs)
    shape = float(np.mean([c.score for c in columns]))
    trend = float(np.mean([p.score for p in pair_scores])) if pair_scores else None
    cov_gap, cov_rel = dist.covariance_gap(x_real, x_syn)
    if max(len(x_real), len(x_syn)) > dist.MMD_ROWS:
        subsampled["mmd"] = f"at most {dist.MMD_ROWS} rows per side"
    if max(len(x_real), len(x_syn)) > dist.PR_ROWS:
        subsampled["precision_recall"] = f"at most {dist.PR_ROWS} rows per side"
    mmd = dist.rbf_mmd2(x_real, x_syn, rng)
    precision, recall = dist.precision_recall(x_real, x_syn, rng)
    return FidelityResult(
        column_shape=shape, pair_trend=trend, score=shape if trend is None else (shape + trend) / 2,
        columns={c.name: c.score for c in columns}, column_details=tuple(columns),
        wasserstein={c.name: c.wasserstein for c in columns if c.wasserstein is not None},
        missing_rates={c.name: {"real": c.missing_real, "synthetic": c.missing_synthetic} for c in columns},
        pairs=tuple(pair_scores), pairs_sampled=pairs_sampled, cov_frobenius=cov_gap,
        cov_frobenius_relative=cov_rel, mmd=mmd, precision=precision, recall=recall)


def _utility(real: pd.DataFrame, synthetic: pd.DataFrame, train: pd.DataFrame | None, target: str | None,
             kinds: dict[str, str], ids_real: np.ndarray, keys: list[dict[str, str]], seed: int, max_rows: int,
             rng: np.random.Generator, notes: list[str], subsampled: dict[str, str]):
    if target is None:
        notes.append("utility skipped: no target column given")
        return None
    test_pos = np.arange(len(real))
    if train is None:
        # without the training table, half of the holdout stands in for it; the other half tests
        order = rng.permutation(len(real))
        fit_real, test_pos = _rows(real, np.sort(order[: len(real) // 2])), np.sort(order[len(real) // 2:])
        notes.append("utility baseline trained on half of the holdout (no train table given)")
        baseline = "holdout split"
    else:
        fit_real, baseline = train, "train"
    if len(test_pos) > TEST_ROWS_FACTOR * max_rows:
        test_pos = np.sort(rng.choice(test_pos, size=TEST_ROWS_FACTOR * max_rows, replace=False))
        subsampled["utility_test"] = f"{len(test_pos)} holdout rows"
    result = measure_utility(fit_real, synthetic, _rows(real, test_pos), target=target, kinds=kinds,
                             test_cells=ids_real[test_pos], cell_keys=keys, seed=seed, max_rows=max_rows,
                             baseline=baseline)
    if result.n_fit < min(len(fit_real), len(synthetic)):
        subsampled["utility_fit"] = f"both models fitted on {result.n_fit} rows"
    return result


def _privacy(train: pd.DataFrame | None, real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str],
             encoder, x_real: np.ndarray, x_syn: np.ndarray, eps: float | None, delta: float | None,
             rng: np.random.Generator, max_rows: int, subsampled: dict[str, str]) -> PrivacyResult:
    if train is None:
        return PrivacyResult(exact_match_rate=None, dcr_share=None, mia_auc=None, epsilon=eps, delta=delta,
                             notes=("privacy metrics skipped: they need the train table the generator was fitted on",))
    exact = pm.exact_match_rate(train, synthetic, kinds)
    baseline = pm.exact_match_rate(train, real, kinds)
    train_rows = _rows(train, _positions_quiet(len(train), pm.NN_ROWS, rng))
    x_train = encode(encoder, train_rows)
    dcr, m = pm.dcr_share(x_train, x_real, x_syn, rng)
    auc, _ = pm.mia_auc(x_train, x_real, x_syn, rng)
    subsampled["dcr_share"] = f"{m} train and {m} holdout rows, at most {pm.NN_ROWS} synthetic rows"
    subsampled["mia_auc"] = (f"{m} members (train) and {m} non-members (holdout) against "
                             f"{len(x_syn)} of {len(synthetic)} synthetic rows")
    return PrivacyResult(exact_match_rate=exact, dcr_share=dcr, mia_auc=auc, epsilon=eps, delta=delta,
                         exact_match_baseline=baseline)


def _positions_quiet(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))
