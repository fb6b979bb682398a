"""Fidelity metrics on column views: column shapes, pair trends, per-context scores.

Privacy: these functions read real rows and return statistics of them (frequencies, correlations,
quantile bins). The numbers are NOT privacy-protected; they are for the data owner, not for
release, and using them to pick a model would itself have to be charged to the privacy budget.

Definitions (also in docs/guides/evaluation.md): a numeric column scores 1 - KS statistic on its present
values; a categorical column 1 - total variation distance (missing is a category). A numeric pair
scores 1 - |rho_real - rho_syn| / 2 (Pearson on complete rows); any pair with a categorical side
scores 1 - TV distance of the joint frequency table, numeric sides cut into real-quantile bins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cadasg_dist.evaluate.prepare import MISSING, NUMERIC_KINDS, ColumnView

MAX_PAIRS = 300  # above this many column pairs, a fixed-seed sample of pairs is scored


@dataclass(frozen=True)
class ColumnScore:
    name: str
    kind: str
    metric: str  # "ks" (numeric) or "tv" (categorical, boolean)
    score: float
    wasserstein: float | None  # numeric only, on values standardised by the real mean and std
    missing_real: float
    missing_synthetic: float


@dataclass(frozen=True)
class PairScore:
    a: str
    b: str
    metric: str  # "correlation" or "contingency"
    score: float


def tv_distance(codes_r: np.ndarray, codes_s: np.ndarray, n_levels: int) -> float:
    """Total variation distance between the code frequencies of two samples (0 same, 1 disjoint)."""
    if codes_r.size == 0 or codes_s.size == 0:
        return 0.0 if codes_r.size == codes_s.size else 1.0
    p = np.bincount(codes_r, minlength=n_levels) / codes_r.size
    q = np.bincount(codes_s, minlength=n_levels) / codes_s.size
    return float(0.5 * np.abs(p - q).sum())


def column_score(r: ColumnView, s: ColumnView, idx_r: np.ndarray | None = None,
                 idx_s: np.ndarray | None = None, with_extras: bool = True) -> ColumnScore:
    """Shape score of one column, optionally on row subsets ``idx_r`` / ``idx_s``."""
    cr = r.codes if idx_r is None else r.codes[idx_r]
    cs = s.codes if idx_s is None else s.codes[idx_s]
    miss_r = _share_missing(r, cr)
    miss_s = _share_missing(s, cs)
    if r.kind not in NUMERIC_KINDS:
        score = 1.0 - tv_distance(cr, cs, r.n_levels)
        return ColumnScore(r.name, r.kind, "tv", score, None, miss_r, miss_s)
    xr = r.values if idx_r is None else r.values[idx_r]
    xs = s.values if idx_s is None else s.values[idx_s]
    xr, xs = xr[~np.isnan(xr)], xs[~np.isnan(xs)]
    if xr.size == 0 or xs.size == 0:
        return ColumnScore(r.name, r.kind, "ks", float(xr.size == xs.size), None, miss_r, miss_s)
    # the statistic is all we need; the asymptotic method skips the costly exact p-value
    score = 1.0 - float(stats.ks_2samp(xr, xs, method="asymp").statistic)
    wd = _standardised_wasserstein(xr, xs) if with_extras else None
    return ColumnScore(r.name, r.kind, "ks", score, wd, miss_r, miss_s)


def _share_missing(view: ColumnView, codes: np.ndarray) -> float:
    # numeric views keep missing in their last bin; categorical views have a MISSING label
    if codes.size == 0:
        return 0.0
    if view.kind in NUMERIC_KINDS:
        return float(np.mean(codes == view.n_levels - 1))
    try:
        return float(np.mean(codes == view.labels.index(MISSING)))
    except ValueError:
        return 0.0


def _standardised_wasserstein(xr: np.ndarray, xs: np.ndarray) -> float:
    mean, std = float(xr.mean()), float(xr.std())
    std = std if std > 0 else 1.0  # a constant real column: distances in its own units
    return float(stats.wasserstein_distance((xr - mean) / std, (xs - mean) / std))


def all_pairs(names: list[str], rng: np.random.Generator, limit: int = MAX_PAIRS) -> tuple[list[tuple[str, str]], bool]:
    """Every column pair, or a sample of ``limit`` pairs (fixed by ``rng``); True when sampled."""
    pairs = list(itertools.combinations(names, 2))
    if len(pairs) <= limit:
        return pairs, False
    keep = np.sort(rng.choice(len(pairs), size=limit, replace=False))
    return [pairs[i] for i in keep], True


def pair_score(ra: ColumnView, rb: ColumnView, sa: ColumnView, sb: ColumnView,
               idx_r: np.ndarray | None = None, idx_s: np.ndarray | None = None) -> PairScore:
    """Trend score of one column pair, optionally on row subsets."""
    if ra.kind in NUMERIC_KINDS and rb.kind in NUMERIC_KINDS:
        rho_r = _pearson(_take(ra.values, idx_r), _take(rb.values, idx_r))
        rho_s = _pearson(_take(sa.values, idx_s), _take(sb.values, idx_s))
        return PairScore(ra.name, rb.name, "correlation", 1.0 - abs(rho_r - rho_s) / 2.0)
    n_levels = ra.n_levels * rb.n_levels
    joint_r = _take(ra.codes, idx_r) * rb.n_levels + _take(rb.codes, idx_r)
    joint_s = _take(sa.codes, idx_s) * sb.n_levels + _take(sb.codes, idx_s)
    return PairScore(ra.name, rb.name, "contingency", 1.0 - tv_distance(joint_r, joint_s, n_levels))


def _take(x: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    return x if idx is None else x[idx]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation on complete rows; 0 when undefined (a constant or near-empty column),
    which reads as 'no linear trend' rather than failing the whole evaluation."""
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if x.size < 2:
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def fidelity_scores(real: dict[str, ColumnView], synthetic: dict[str, ColumnView],
                    pairs: list[tuple[str, str]]) -> tuple[list[ColumnScore], list[PairScore]]:
    """Column and pair scores over whole (possibly subsampled) tables."""
    columns = [column_score(real[n], synthetic[n]) for n in real]
    pair_scores = [pair_score(real[a], real[b], synthetic[a], synthetic[b]) for a, b in pairs]
    return columns, pair_scores


def subset_scores(real: dict[str, ColumnView], synthetic: dict[str, ColumnView], names: list[str],
                  pairs: list[tuple[str, str]], idx_r: np.ndarray, idx_s: np.ndarray
                  ) -> tuple[float | None, float | None]:
    """Mean column-shape and pair-trend scores of ``names`` on the given row subsets."""
    if not names:
        return None, None
    shape = float(np.mean([column_score(real[n], synthetic[n], idx_r, idx_s, with_extras=False).score
                           for n in names]))
    if not pairs:
        return shape, None
    trend = float(np.mean([pair_score(real[a], real[b], synthetic[a], synthetic[b], idx_r, idx_s).score
                           for a, b in pairs]))
    return shape, trend


def frequency_tv(ids_r: np.ndarray, ids_s: np.ndarray, n_cells: int) -> float:
    """TV distance between the real and synthetic context frequency distributions."""
    return tv_distance(ids_r, ids_s, n_cells)


def association_matrix(views: dict[str, ColumnView], names: list[str]) -> np.ndarray:
    """Pairwise association for heatmaps: Pearson for two numeric columns (-1..1), Cramér's V
    (0..1) on categories / quantile bins whenever a categorical column is involved."""
    k = len(names)
    out = np.eye(k)
    for i, j in itertools.combinations(range(k), 2):
        a, b = views[names[i]], views[names[j]]
        if a.kind in NUMERIC_KINDS and b.kind in NUMERIC_KINDS:
            v = _pearson(a.values, b.values)
        else:
            v = _cramers_v(a.codes, b.codes, a.n_levels, b.n_levels)
        out[i, j] = out[j, i] = v
    return out


def _cramers_v(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> float:
    n = a.size
    if n == 0:
        return 0.0
    table = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(float)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    r, c = table.shape
    if min(r, c) < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * (min(r, c) - 1))))
