"""Per-context fidelity, context frequency distance, and target class rates.

Privacy: per-context scores and counts of real rows are statistics of small groups, the most
revealing kind of output here. NOT privacy-protected: for the data owner, not for release.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cadasg_dist.evaluate.fidelity import subset_scores, tv_distance
from cadasg_dist.evaluate.prepare import ColumnView, category_keys
from cadasg_dist.evaluate.result import ContextFidelity, ContextRow, TargetRate

MIN_CONTEXT_ROWS = 30  # a context with fewer real rows is listed but kept out of the minimum
MAX_CONTEXT_PAIRS = 100  # pairs scored inside each context (an evenly spread subset of the overall pairs)


def per_context_fidelity(real: dict[str, ColumnView], synthetic: dict[str, ColumnView], *,
                         context: tuple[str, ...], keys: list[dict[str, str]],
                         ids_r: np.ndarray, ids_s: np.ndarray, counts_r: np.ndarray, counts_s: np.ndarray,
                         pairs: list[tuple[str, str]]) -> ContextFidelity:
    """Column shape and pair trend inside each context cell, sorted worst first.

    ``ids_r`` / ``ids_s`` are the cells of the (subsampled) rows the scores are computed on;
    ``counts_r`` / ``counts_s`` the cell sizes in the full tables, which is what is reported.
    Context columns are left out of the scores: they are constant inside a cell.
    """
    names = [n for n in real if n not in context]
    inner_pairs = _spread([p for p in pairs if p[0] not in context and p[1] not in context], MAX_CONTEXT_PAIRS)
    order_r, order_s = np.argsort(ids_r, kind="stable"), np.argsort(ids_s, kind="stable")
    bounds_r = np.searchsorted(ids_r[order_r], np.arange(len(keys) + 1))
    bounds_s = np.searchsorted(ids_s[order_s], np.arange(len(keys) + 1))
    rows = []
    for cell, key in enumerate(keys):
        idx_r = order_r[bounds_r[cell]:bounds_r[cell + 1]]
        idx_s = order_s[bounds_s[cell]:bounds_s[cell + 1]]
        rows.append(_context_row(real, synthetic, names, inner_pairs, key, idx_r, idx_s,
                                 int(counts_r[cell]), int(counts_s[cell])))
    rows.sort(key=lambda r: (r.score is None, r.score if r.score is not None else 0.0, -r.n_real))
    scored = [r for r in rows if r.score is not None]
    big = [r.score for r in scored if not r.small]
    weights = np.array([r.n_real for r in scored], dtype=float)
    mean = float(np.average([r.score for r in scored], weights=weights)) if weights.sum() > 0 else None
    return ContextFidelity(columns=tuple(context), rows=tuple(rows), min=min(big) if big else None,
                           weighted_mean=mean, min_rows=MIN_CONTEXT_ROWS)


def _spread(pairs: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    # evenly spaced rather than the first ``limit``, which would all involve the first columns
    if len(pairs) <= limit:
        return pairs
    return [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))]


def _context_row(real: dict[str, ColumnView], synthetic: dict[str, ColumnView], names: list[str],
                 pairs: list[tuple[str, str]], key: dict[str, str], idx_r: np.ndarray, idx_s: np.ndarray,
                 n_real: int, n_syn: int) -> ContextRow:
    small = n_real < MIN_CONTEXT_ROWS
    if n_real == 0:
        return ContextRow(key, n_real, n_syn, None, None, None, small, "only in synthetic")
    if n_syn == 0:
        # a context the generator never produces is the worst possible failure for that group
        return ContextRow(key, n_real, n_syn, 0.0, 0.0, 0.0, small, "no synthetic rows")
    if idx_r.size == 0 or idx_s.size == 0:
        return ContextRow(key, n_real, n_syn, None, None, None, small, "no rows left after subsampling")
    shape, trend = subset_scores(real, synthetic, names, pairs, idx_r, idx_s)
    if shape is None:
        return ContextRow(key, n_real, n_syn, None, None, None, small, "no column outside the context")
    score = shape if trend is None else (shape + trend) / 2.0
    return ContextRow(key, n_real, n_syn, shape, trend, score, small)


def context_frequency_tv(counts_r: np.ndarray, counts_s: np.ndarray) -> float:
    """TV distance between real and synthetic context frequencies (0 same mix, 1 disjoint)."""
    ids_r = np.repeat(np.arange(len(counts_r)), counts_r)
    ids_s = np.repeat(np.arange(len(counts_s)), counts_s)
    return tv_distance(ids_r, ids_s, len(counts_r))


def target_rates(real: pd.Series, synthetic: pd.Series, kind: str) -> tuple[TargetRate, ...]:
    """Per-class share of the target in real (holdout) vs synthetic rows, largest real class first."""
    kr = pd.Series(category_keys(real, kind)).value_counts(normalize=True)
    ks = pd.Series(category_keys(synthetic, kind)).value_counts(normalize=True)
    labels = list(kr.index) + [k for k in ks.index if k not in kr.index]
    out = []
    for label in labels:
        r, s = float(kr.get(label, 0.0)), float(ks.get(label, 0.0))
        out.append(TargetRate(str(label), r, s, abs(s - r) / r if r > 0 else None))
    return tuple(out)
