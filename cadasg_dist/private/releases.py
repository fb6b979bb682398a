"""The Gaussian releases of a private run's preprocessing: numeric bounds (a sign and magnitude
histogram), per-column histograms (quantiles, point masses, missingness, category frequencies)
and the per-class and per-context marginals used by the calibration.

Each release is a q = 1 Gaussian mechanism on the concatenation of per-column histograms; one unit
changes each column's histogram by at most k = ``max_rows_per_unit`` in L2, so the sensitivity is
k·sqrt(M) for M histograms. The caller records each release in the ledger.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.data.categorical import category_key
from cadasg_dist.data.continuous import atom_index, histogram_fit
from cadasg_dist.errors import PrivacyBudgetError
from cadasg_dist.private.columns import PrivateColumn, numeric_values

log = logging.getLogger(__name__)

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


def release_bounds(df: pd.DataFrame, columns: list[PrivateColumn], *, sigma: float, rows_per_unit: int,
                   rng: np.random.Generator) -> tuple[list[PrivateColumn], float]:
    """Gaussian release of each column's magnitude histogram; bounds = extreme bins above the
    threshold (``credible_cells``), so they are tight up to a factor 2 in magnitude (declare them
    for better ones).

    Returns the columns whose histogram has no bin above the threshold (their bounds stay unset; in
    table order, all of them, so the caller reports or drops every one at once) and the noise sd of
    each released count (public: σ, rows per unit and the number of columns)."""
    std = sigma * rows_per_unit * math.sqrt(len(columns))
    unreleased = []
    for col in columns:
        counts = bounds_counts(df, col)
        if not settle_bounds(col, counts + rng.normal(0.0, std, len(counts)), std):
            unreleased.append(col)
    return unreleased, std


def bounds_counts(df: pd.DataFrame, col: PrivateColumn) -> np.ndarray:
    """The exact magnitude histogram of one column (what ``release_bounds`` adds noise to; a
    federated silo computes it over its own rows). Never leaves a run without noise."""
    x = numeric_values(df[col.name], col.kind)
    return np.bincount(_magnitude_bins(x[~np.isnan(x)]), minlength=2 * _ZERO + 1).astype(float)


def settle_bounds(col: PrivateColumn, noisy: np.ndarray, std: float) -> bool:
    """Set ``col``'s bounds from its noisy magnitude histogram (count sd ``std``); False when no bin
    is credible (the bounds stay unset). Post-processing of the release."""
    hits = credible_cells(noisy, std)
    if hits.size == 0:
        return False
    lo, _, lo_open, _ = _bin_edges(int(hits[0]))
    _, hi, _, hi_open = _bin_edges(int(hits[-1]))
    if col.kind in ("integer", "categorical"):
        lo = math.floor(lo) + 1 if lo_open else math.ceil(lo)
        hi = math.ceil(hi) - 1 if hi_open else math.floor(hi)
    override = col.override
    col.lo = float(override.min) if override.min is not None else float(lo)
    col.hi = float(override.max) if override.max is not None else float(max(hi, col.lo))
    col.sources["bounds"] = "dp"
    return True


def unreleased_bounds_error(names: list[str], std: float, *, kept: tuple[str, ...] = ()) -> PrivacyBudgetError:
    """One error naming every column whose bounds could not be released and what to declare.

    ``kept`` names those among them that ``privacy.unreleased_bounds: drop`` cannot leave out (the
    target, context columns, sources of derived columns). Names and public settings only: never a
    value read from the rows."""
    listed = ", ".join(map(repr, names))
    declare = ", ".join(f"data.columns.{n}.min/.max" for n in names)
    remedy = (f"declare {declare} from the documentation (a categorical column's categories instead), "
              "or raise epsilon")
    if kept:
        why = f"; {', '.join(map(repr, kept))} cannot be left out (target, context or source of a derived column)"
    else:
        why = ", or set privacy.unreleased_bounds: drop to leave them out of the model"
    return PrivacyBudgetError(f"no magnitude bin holds enough rows to release the bounds of {len(names)} "
                              f"column(s) under the noise (sd {std:.1f} rows): {listed}; {remedy}{why}")


def _cells(col: PrivateColumn, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of a numeric column inside [lo, hi]: (points, interval starts, interval ends)."""
    lo, hi = col.lo, col.hi
    if col.kind == "integer" and hi - lo + 1 <= 2 * bins:
        return np.arange(lo, hi + 1), np.empty(0), np.empty(0)
    inner_zero = lo < 0 < hi and col.kind != "datetime"
    edges = np.linspace(lo, hi, bins + 1)
    if inner_zero:  # 0 is a candidate atom: make it an edge so its point cell starts an interval
        edges = np.unique(np.r_[edges, 0.0])
    return np.unique([lo, hi] + ([0.0] if inner_zero else [])), edges[:-1], edges[1:]


def release_histograms(df: pd.DataFrame, columns: list[PrivateColumn], *, sigma: float, rows_per_unit: int, bins: int,
                       n_quantiles: int, atom_share: float, rng: np.random.Generator) -> None:
    """Gaussian release of one histogram per column (a missing cell, then categories or numeric
    cells); sets each column's missingness, mode, and quantiles/atom (post-processing)."""
    std = sigma * rows_per_unit * math.sqrt(len(columns))
    for col in columns:
        counts = column_counts(df, col, bins)
        settle_histogram(col, counts + rng.normal(0.0, std, len(counts)), std, bins=bins, n_quantiles=n_quantiles,
                         atom_share=atom_share)


def column_counts(df: pd.DataFrame, col: PrivateColumn, bins: int) -> np.ndarray:
    """The exact [missing, categories...] or [missing, points..., intervals...] histogram of one
    column inside its (public) bounds: what ``release_histograms`` adds noise to; a federated silo
    computes it over its own rows. Never leaves a run without noise."""
    s = df[col.name]
    missing = s.isna().to_numpy()
    if col.categories is not None:
        lookup = {v: i for i, v in enumerate(col.categories)}
        codes = np.array([lookup.get(category_key(v), -1) for v in s[~missing].tolist()], dtype=np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(col.categories)).astype(float)
        return np.r_[missing.sum(), counts]
    x = np.clip(numeric_values(s, col.kind)[~missing], col.lo, col.hi)
    points, starts, ends = _cells(col, bins)
    on_point = np.isin(x, points)
    point_counts = np.array([(x == p).sum() for p in points], dtype=float)
    interval_counts = (np.histogram(x[~on_point], bins=np.r_[starts, ends[-1:]])[0].astype(float)
                       if len(starts) else np.empty(0))
    return np.r_[missing.sum(), point_counts, interval_counts].astype(float)


def settle_histogram(col: PrivateColumn, noisy: np.ndarray, std: float, *, bins: int, n_quantiles: int,
                     atom_share: float) -> None:
    """Set ``col``'s missingness, mode or quantile grid from its noisy histogram (count sd
    ``std``, the layout of ``column_counts``). Post-processing of the release."""
    if col.categories is not None:
        col.mode = col.categories[int(np.argmax(noisy[1:]))]
        col.histogram = noisy
    else:
        points, starts, ends = _cells(col, bins)
        col.fitted = _fit_numeric(col, points, starts, ends, np.clip(noisy[1:], 0, None), std,
                                  n_quantiles=n_quantiles, atom_share=atom_share)
    col.has_missing = bool(noisy[0] > MISSING_SDS * std)
    col.sources["missing"] = "dp"


def value_resolution(col: PrivateColumn, bins: int) -> float:
    """Half the width of the value cells that ``preprocess/histograms`` gave a numeric column (one
    per integer, or ``bins`` intervals): the quantile grid is linear inside each, so a tied value
    is spread over its cell when the class histograms count it (``class_counts``)."""
    points, starts, ends = _cells(col, bins)
    return 0.5 if len(starts) == 0 else float(np.max(ends - starts)) / 2.0


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


def _fit_numeric(col: PrivateColumn, points: np.ndarray, starts: np.ndarray, ends: np.ndarray, counts: np.ndarray,
                 std: float, *, n_quantiles: int, atom_share: float) -> dict[str, Any]:
    """``ContinuousTransform`` fields from noisy cell counts: the data layer's atom rule and
    histogram fit (``data.continuous``), on the released cells with the noise's tails cut."""
    n_points = len(points)
    lows, highs = np.r_[points, starts], np.r_[points, ends]
    atom = None
    # "More than two distinct values" from the public cell layout (noisy presence would hide the
    # small values that make a point mass worth its own span).
    top = atom_index(counts[:n_points], total=counts.sum(), distinct=len(counts), atom_share=atom_share)
    if top is not None:
        atom = float(points[top])
        counts = counts.copy()
        counts[top] = 0.0
    col.sources["quantiles"] = "dp"
    counts = np.where(counts > CDF_SDS * std, counts, 0.0)
    order = np.lexsort((highs - lows > 0, lows))  # by position, a point before the interval it starts
    fields = histogram_fit(lows[order], highs[order], within_support(counts[order], std), n_quantiles=n_quantiles,
                           lo=col.lo, hi=col.hi)
    return {"quantiles": fields["quantiles"], "atom": atom, "mean": fields["mean"], "std": fields["std"]}


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


def release_count(n_rows: int, n_units: int | None, *, sigma: float, rows_per_unit: int,
                  rng: np.random.Generator) -> tuple[int, int, float]:
    """The table's size as a Gaussian release: (released rows, released units, L2 sensitivity).
    The ONE count release: a central run's ``preprocess/count``, a federated silo's ``silo/count``
    and each silo's share of the federated plan's count all go through ``count_vector`` and
    ``settle_count``.

    Row-level privacy (``n_units`` None): one count, sensitivity 1. Unit-level: the vector
    (units, rows / k), which one unit moves by at most (1, 1), so sensitivity sqrt(2). Rounded and
    at least 1: post-processing. Neither the exact count nor anything computed from it without
    noise may leave the run; q, δ and every other use of the size read these released values.
    """
    exact, sensitivity = count_vector(n_rows, n_units, rows_per_unit)
    rows, units = settle_count(exact + rng.normal(0.0, sigma * sensitivity, len(exact)), rows_per_unit)
    return rows, units, sensitivity


def count_vector(n_rows: int, n_units: int | None, rows_per_unit: int) -> tuple[np.ndarray, float]:
    """(the exact vector the count release adds N(0, (σ·sensitivity)²) to, its L2 sensitivity):
    [rows] without a privacy unit (sensitivity 1), else [units, rows / k] (sensitivity sqrt(2)).
    Sums over silos keep the layout, so a federated count is the sum of the silos' vectors."""
    if n_units is None:
        return np.array([float(n_rows)]), 1.0
    return np.array([float(n_units), n_rows / rows_per_unit]), math.sqrt(2.0)


def settle_count(noisy: np.ndarray, rows_per_unit: int) -> tuple[int, int]:
    """(rows, units) from a noisy ``count_vector`` (or a sum of them): rounded, units at least 1 and
    rows at least units. Post-processing of the release."""
    if len(noisy) == 1:
        released = max(1, int(round(float(noisy[0]))))
        return released, released
    units = max(1, int(round(float(noisy[0]))))
    return max(units, int(round(rows_per_unit * float(noisy[1])))), units
