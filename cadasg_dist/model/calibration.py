"""Marginal calibration: the generator's one-column marginals moved onto the released ones.

A generator trained under DP-SGD at a small epsilon gets the joint structure roughly right but its
one-column marginals drift (measured on rwm5yr at epsilon = 1: column shape 0.889; the DP marginal
baselines MST and AIM reach 0.98). The one-column marginals are already known to the model: the
private preprocessing releases a histogram of every column (``preprocess/histograms``), from which
the continuous columns' quantile grids and the categorical columns' ``frequencies`` come. This
module fits, once per model, a fixed correction of the decoder's output that makes the generated
marginals match them:

* a categorical span (its categories, plus a missing slot): a factor per category, applied to every
  row's probabilities before they are renormalised (a prior-shift correction: rows keep their
  relative preferences, and the mean probability of each category equals its released frequency);
* a continuous span with the quantile encoding: a monotone map of the decoder's output onto the
  normal scores, so that the quantile grid turns it into the released marginal (ranks, and so the
  dependence between columns, are kept).

Then, where the transformer holds *class marginals* (``DataTransformer.class_marginals``: per class
of the target's stratifying span, a histogram of every other column; a DP release in private runs,
``privacy.preprocessing.release_group_marginals``), the same two corrections again, per class: each
column's distribution among the rows of one target class, and a numeric column's atom and missing
shares, are moved onto that class's histograms (``model.calibrate_classes``, by default on for a
private fit at epsilon <= 3, where it lifts utility, and off above, where it cost rwm5yr). This restores what a
downstream model learns first, how each feature shifts with the target, which DP-SGD at a small
epsilon blurs (docs/privacy.md, "Per-class calibration"). The atom shares matter: correcting a
count's nonzero values by class but not how often it is zero erased the signal the model had put
in the values (rwm5yr's docvis). A noisy histogram is first shrunk toward the model's
own class distribution by how far the two differ beyond the release's known noise (an empirical-Bayes
weight from released and generated quantities only), so a class too small for its noise keeps what
the model learnt.

The correction is fitted on a reference draw of the model itself (every cell at its cached share,
a fixed seed), so it is deterministic: the same model gives the same correction in any process and
the same seed gives the same rows. Privacy: it reads the model (a DP release) and the released
marginals only: post-processing, it spends no budget. The pinned target span, the atom and
missing indicators of numeric columns, and the "standard" encoding are left as generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from cadasg_dist.data.transforms import CategoricalTransform, ContinuousTransform, DataTransformer, SpanInfo

REFERENCE_ROWS = 20_000
REFERENCE_SEED = 20_261_128
LEVELS = 199  # interior levels of a continuous map
# A continuous column's class histogram counts its normal scores in this many equal-probability
# cells of N(0, 1) (the quantile encoding makes the released marginal N(0, 1), so the cells are public).
CLASS_CELLS = 8
CLASS_EDGES = ndtri(np.arange(1, CLASS_CELLS) / CLASS_CELLS)  # their inner edges, as normal scores
# A continuous column's context histogram counts its normal scores in cells of equal *width* in score
# (the two tails beyond +-3 are cells too): a context that lives in the tail of the table's
# distribution still spans several of them (diamonds' Fair: its median depth is the 98th percentile
# of all rows, inside the top one of the class histograms' equal-probability cells).
CONTEXT_EDGES = np.linspace(-3.0, 3.0, 25)
MIN_CLASS_ROWS = 20  # a class with fewer reference rows keeps its global correction only
MAX_FACTOR = 50.0  # a category's factor stays within [1/MAX_FACTOR, MAX_FACTOR]
ITERATIONS = 50


@dataclass
class MarginalCalibration:
    factors: dict[int, torch.Tensor] = field(default_factory=dict)  # span start -> (width,) factors
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # span start -> (x, y) knots
    class_span: tuple[int, int] | None = None  # (start, stop) of the pinned target span that gives a row's class
    class_factors: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (class, start) -> factors
    class_maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    context_factors: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (context, start) -> factors
    context_maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def fit(cls, probs: torch.Tensor, transformer: DataTransformer, pinned: SpanInfo | None = None,
            kinds: str = "both", classes: bool = True, contexts: np.ndarray | None = None) -> MarginalCalibration:
        """Fit on ``probs`` (N, D), the activated decoder output of a reference draw; the ``pinned``
        span (the target's, set per cell) is left alone. ``kinds``: "both", "categorical",
        "continuous" or "off" (``model.calibrate_marginals``); ``classes``: also the per-class
        corrections, where the transformer holds class marginals and ``pinned`` gives the class;
        ``contexts`` (N,): each reference row's context, for the per-context corrections where the
        transformer holds context marginals."""
        out, spans = cls(), transformer.spans
        pinned_start = None if pinned is None else pinned.start
        weights = _value_weights(probs, spans)
        categorical, continuous = kinds in ("both", "categorical"), kinds in ("both", "continuous")
        for span in spans:
            if span.start == pinned_start or span.role != "value":
                continue
            t = transformer.transforms[span.column]
            block = probs[:, span.start:span.stop].double()
            if isinstance(t, CategoricalTransform) and t.frequencies is not None and categorical:
                out.factors[span.start] = prior_shift(block, torch.as_tensor(t.frequencies, dtype=torch.float64))
            elif isinstance(t, ContinuousTransform) and t.encoding == "quantile" and continuous:
                out.maps[span.start] = normal_score_map(block[:, 0].numpy(), weights.get(span.column))
        if classes and pinned is not None and transformer.class_marginals:
            out.class_span = (pinned.start, pinned.stop)
            corrected = out.apply(probs)
            klass = corrected[:, pinned.start:pinned.stop].argmax(1).numpy()
            _fit_groups(corrected, klass, transformer, transformer.class_marginals, CLASS_EDGES,
                        out.class_factors, out.class_maps, categorical, continuous)
        if contexts is not None and transformer.context_marginals:
            corrected = out.apply(probs)
            _fit_groups(corrected, np.asarray(contexts), transformer, transformer.context_marginals, CONTEXT_EDGES,
                        out.context_factors, out.context_maps, categorical, continuous)
        return out

    def apply(self, probs: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        """The corrected (N, D) probabilities / values (a new tensor); ``contexts`` (N,), each row's
        context, applies the per-context corrections (none without it)."""
        by_context = contexts is not None and bool(self.context_maps or self.context_factors)
        if not self.factors and not self.maps and self.class_span is None and not by_context:
            return probs
        out = probs.clone()
        _correct(out, slice(None), self.factors, self.maps)
        if self.class_span is not None:
            klass = out[:, self.class_span[0]:self.class_span[1]].argmax(1)
            _correct_groups(out, klass, self.class_factors, self.class_maps)
        if by_context:
            _correct_groups(out, torch.as_tensor(contexts), self.context_factors, self.context_maps)
        return out


def _fit_groups(probs: torch.Tensor, groups: np.ndarray, transformer: DataTransformer, release: dict[str, Any],
                edges: np.ndarray, factors: dict[tuple[int, int], torch.Tensor],
                maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]], categorical: bool,
                continuous: bool) -> None:
    """Per group (a target class, a context) corrections of every span the release holds a histogram
    of, on top of those already applied to ``probs``; written into ``factors`` and ``maps``."""
    std, counts = float(release["std"]), release["counts"]
    weights = _value_weights(probs, transformer.spans)
    for span in transformer.spans:
        key = class_key(span)
        if key not in counts:
            continue
        numeric = not isinstance(transformer.transforms[span.column], CategoricalTransform)
        if (numeric and not continuous) or (not numeric and not categorical):
            continue
        for g, released in enumerate(counts[key]):
            rows = groups == g
            if rows.sum() < MIN_CLASS_ROWS:
                continue
            block = probs[rows, span.start:span.stop].double()
            if span.kind == "softmax":
                target = shrink_to_model(np.asarray(released, dtype=float), block.mean(0).numpy(), std)
                factors[(g, span.start)] = prior_shift(block, torch.from_numpy(target))
            else:
                v = block[:, 0].numpy()
                w = weights[span.column][rows] if span.column in weights else np.ones(len(v))
                own = np.bincount(normal_cells(v, edges), weights=w, minlength=len(edges) + 1)
                target = shrink_to_model(np.asarray(released, dtype=float), own / max(own.sum(), 1e-12), std)
                maps[(g, span.start)] = cell_score_map(v, w, target, edges)


def _correct_groups(out: torch.Tensor, groups: torch.Tensor, factors: dict[tuple[int, int], torch.Tensor],
                    maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]) -> None:
    for g in groups.unique().tolist():
        rows = groups == g
        _correct(out, rows, {s: f for (k, s), f in factors.items() if k == g},
                 {s: m for (k, s), m in maps.items() if k == g})


def _correct(out: torch.Tensor, rows: slice | torch.Tensor, factors: dict[int, torch.Tensor],
             maps: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    """Apply category factors and continuous maps to ``out[rows]`` in place."""
    for start, f in factors.items():
        block = out[rows, start:start + len(f)] * f.to(out.dtype)
        out[rows, start:start + len(f)] = block / block.sum(1, keepdim=True).clamp_min(1e-12)
    for start, (x, y) in maps.items():
        out[rows, start] = torch.from_numpy(_interp_linear_ends(out[rows, start].double().numpy(), x, y)).to(out.dtype)


def prior_shift(block: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Factors r with mean_i normalise(p_i * r) = target (fixed-point iteration, bounded factors)."""
    k = block.shape[1]
    target = target.clamp_min(0.0)
    target = target / target.sum() if float(target.sum()) > 0 else torch.full((k,), 1.0 / k, dtype=block.dtype)
    target = target.clamp_min(0.5 / max(len(block), 1))  # a category the release barely saw stays possible
    target = target / target.sum()
    r = torch.ones(k, dtype=block.dtype)
    for _ in range(ITERATIONS):
        p = block * r
        mean = (p / p.sum(1, keepdim=True).clamp_min(1e-12)).mean(0)
        r = (r * target / mean.clamp_min(1e-12)).clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
        r = r / r.max()
    return r.float()


def normal_score_map(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of a monotone map sending the (weighted) distribution of ``values`` to N(0, 1)."""
    w = np.ones(len(values)) if weights is None else weights
    return cell_score_map(values, w, np.full(CLASS_CELLS, 1.0 / CLASS_CELLS))


def normal_cells(values: np.ndarray, edges: np.ndarray = CLASS_EDGES) -> np.ndarray:
    """The cell (0..len(edges)) of each normal score, cut at the inner ``edges`` (by default the
    class histograms' CLASS_CELLS equal-probability cells of N(0, 1))."""
    return np.searchsorted(edges, values, side="right")


def _cell_levels(edges: np.ndarray) -> np.ndarray:
    """N(0, 1)'s CDF at the cells' edges, outer ends included: (len(edges) + 2,)."""
    return np.r_[0.0, ndtr(edges), 1.0]


def class_counts(x: np.ndarray, transformer: DataTransformer, class_span: SpanInfo,
                 resolution: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per span of every column but the target (keyed by ``class_key``), a (classes, CLASS_CELLS)
    histogram of encoded rows ``x`` by the class in ``class_span`` (``group_counts``)."""
    klass = x[:, class_span.start:class_span.stop].argmax(1)
    return group_counts(x, transformer, klass, class_span.width, class_span.column, CLASS_EDGES, resolution)


def context_counts(x: np.ndarray, transformer: DataTransformer, contexts: np.ndarray, n_contexts: int,
                   target: str | None, resolution: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per span of every column but the target, a (contexts, cells) histogram of encoded rows ``x``
    by context (``contexts``: each row's id), continuous values in the CONTEXT_EDGES cells."""
    return group_counts(x, transformer, np.asarray(contexts), n_contexts, target, CONTEXT_EDGES, resolution)


def group_counts(x: np.ndarray, transformer: DataTransformer, groups: np.ndarray, n_groups: int, skip: str | None,
                 edges: np.ndarray, resolution: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per span of every column but ``skip`` (keyed by ``class_key``), a (groups, cells) histogram
    of encoded rows ``x`` by their group: a categorical column's slots, a numeric column's atom and
    missing indicators, and a quantile-encoded continuous value's normal score in the cells cut at
    ``edges``, over the rows whose value is used (not its atom, not missing). Each row adds at most
    1 to each histogram (L2 sensitivity sqrt(len(result)) over all of them).

    A continuous row is counted as the values within ``resolution[column]`` (default: 0.5 for an
    integer column, else 0) of its own would be: its weight is split over the cells that the
    quantile grid maps that interval to. The decoder turns a whole interval of normal scores into
    one tied value (an integer, or a value inside one cell of a DP histogram, where the grid is
    linear), while the encoder puts every row of that value at one score; counted as points, tied
    values would pile up in one cell and the calibration would chase the pile."""
    used = _value_weights(torch.from_numpy(np.asarray(x)), transformer.spans)
    levels = _cell_levels(edges)
    cells = len(edges) + 1
    out: dict[str, np.ndarray] = {}
    for span in transformer.spans:
        if span.column == skip:
            continue
        t = transformer.transforms[span.column]
        if span.kind == "softmax":  # a categorical column, or a numeric one's atom or missing indicator
            mass = np.asarray(x[:, span.start:span.stop], dtype=float)
        elif t.encoding == "quantile":
            half = (resolution or {}).get(span.column, 0.5 if t.schema.kind == "integer" else 0.0)
            lo, hi = _cdf_interval(np.asarray(x[:, span.start], dtype=float), t, half)
            width = np.maximum(hi - lo, 1e-12)
            overlap = np.clip(np.minimum(hi[:, None], levels[None, 1:]) - np.maximum(lo[:, None], levels[None, :-1]),
                              0.0, None)
            point = (hi - lo) < 1e-12  # a row at one score: its cell
            own = np.minimum(np.searchsorted(levels, lo, side="right") - 1, cells - 1).clip(0)
            mass = np.where(point[:, None], np.eye(cells)[own], overlap / width[:, None])
            mass = mass * (used[span.column][:, None] if span.column in used else 1.0)
        else:
            continue
        out[class_key(span)] = np.stack([mass[groups == g].sum(0) for g in range(n_groups)])
    return out


def class_key(span: SpanInfo) -> str:
    """A span's name in the class histograms: the column, or "column.atom" / "column.missing" for a
    numeric column's indicators (how often the value is the atom or missing differs by class too)."""
    return span.column if span.role == "value" else f"{span.column}.{span.role}"


def _cdf_interval(scores: np.ndarray, t: ContinuousTransform, half: float) -> tuple[np.ndarray, np.ndarray]:
    """The grid's CDF levels of value ± ``half`` for each encoded score (the value read back on the
    unrounded grid); ``half`` = 0 gives the encoded level itself."""
    u = ndtr(scores)
    if half <= 0:
        return u, u
    levels = np.linspace(0.0, 1.0, len(t.quantiles))
    value = np.interp(u, levels, t.quantiles)
    lo = np.interp(value - half, t.quantiles, levels, left=0.0, right=1.0)
    hi = np.interp(value + half, t.quantiles, levels, left=0.0, right=1.0)
    return np.minimum(lo, u), np.maximum(hi, u)


def shrink_to_model(released: np.ndarray, own: np.ndarray, std: float) -> np.ndarray:
    """Cell probabilities for one class: the released counts, pulled toward the model's own shares
    ``own`` with the weight d / (d + W·std²), where d = max(0, ||r - n·own||² - W·std²) estimates
    how far the model is from the truth beyond the release's noise (W cells, n = the counts' sum).
    Exact counts (std = 0) are taken as they are."""
    n = max(float(released.sum()), 1.0)
    if std > 0:
        noise = len(released) * std ** 2
        gap = max(0.0, float(((released - n * own) ** 2).sum()) - noise)
        w = gap / (gap + noise)
        released = w * released + (1.0 - w) * n * own
    released = np.clip(released, 0.0, None)
    total = released.sum()
    return released / total if total > 0 else np.full(len(released), 1.0 / len(released))


def cell_score_map(values: np.ndarray, weights: np.ndarray, shares: np.ndarray,
                   edges: np.ndarray = CLASS_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of a monotone map sending the weighted ``values`` to normal scores whose cells
    (cut at ``edges``; by default the CLASS_CELLS equal-probability ones) hold ``shares``
    (N(0, 1)'s shape inside each cell)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], np.clip(weights[order], 0.0, None)
    cdf = np.cumsum(w)
    if cdf[-1] <= 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    levels = np.arange(1, LEVELS + 1) / (LEVELS + 1)
    x = np.interp(levels * cdf[-1], cdf - w / 2, v)
    cum = np.r_[0.0, np.cumsum(shares + 1e-9)]
    u = np.interp(levels, cum / cum[-1], _cell_levels(edges))
    y = ndtri(np.clip(u, 1e-6, 1 - 1e-6))
    # A tie in the generated values (a run of equal knots) is one knot at the mean of its levels'
    # normal scores: the tied mass lands at the centre of its share, and the mapped mean stays right.
    group = np.cumsum(np.r_[True, np.diff(x) > 1e-9]) - 1
    counts = np.bincount(group)
    return x[np.r_[0, np.cumsum(counts)[:-1]]], np.bincount(group, weights=y) / counts


def _interp_linear_ends(v: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Piecewise-linear through the knots, extended at the ends with the end slopes (monotone)."""
    if len(x) < 2:
        return v - x[0] + y[0]
    out = np.interp(v, x, y)
    lo_slope = (y[1] - y[0]) / (x[1] - x[0])
    hi_slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    out = np.where(v < x[0], y[0] + (v - x[0]) * lo_slope, out)
    return np.where(v > x[-1], y[-1] + (v - x[-1]) * hi_slope, out)


def _value_weights(probs: torch.Tensor, spans: tuple[SpanInfo, ...]) -> dict[str, np.ndarray]:
    """Per numeric column, the probability that a row's value is used (not the atom, not missing):
    the continuous map is fitted on the values that will be decoded."""
    weights: dict[str, np.ndarray] = {}
    for span in spans:
        if span.role in ("atom", "missing"):
            used = probs[:, span.start].double().numpy()  # slot 0: "other" / "present"
            weights[span.column] = weights.get(span.column, 1.0) * used
    return weights


def reference_draw(model, rows: int = REFERENCE_ROWS) -> tuple[torch.Tensor, np.ndarray]:
    """The activated decoder output for ``rows`` rows over every cell at its cached share, and
    each row's context."""
    rng = np.random.default_rng(REFERENCE_SEED)
    g = torch.Generator().manual_seed(REFERENCE_SEED)
    cell = torch.from_numpy(model.cell_allocation(rows, None, rng))
    return model.feature_probs(cell, g, calibrated=False), (cell // model.cache.strata).numpy()
