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

The correction is fitted on a reference draw of the model itself (every cell at its cached share,
a fixed seed), so it is deterministic: the same model gives the same correction in any process and
the same seed gives the same rows. Privacy: it reads the model (a DP release) and the released
marginals only: post-processing, it spends no budget. The pinned target span, the atom and
missing indicators of numeric columns, and the "standard" encoding are left as generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import ndtri

from cadasg_dist.data.transforms import CategoricalTransform, ContinuousTransform, DataTransformer, SpanInfo

REFERENCE_ROWS = 20_000
REFERENCE_SEED = 20_261_128
LEVELS = 199  # interior levels of a continuous map
MAX_FACTOR = 50.0  # a category's factor stays within [1/MAX_FACTOR, MAX_FACTOR]
ITERATIONS = 50


@dataclass
class MarginalCalibration:
    factors: dict[int, torch.Tensor] = field(default_factory=dict)  # span start -> (width,) factors
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # span start -> (x, y) knots

    @classmethod
    def fit(cls, probs: torch.Tensor, transformer: DataTransformer, pinned: int | None = None,
            kinds: str = "both") -> MarginalCalibration:
        """Fit on ``probs`` (N, D), the activated decoder output of a reference draw; the span that
        starts at ``pinned`` (the target's, set per cell) is left alone. ``kinds``: "both",
        "categorical", "continuous" or "off" (``model.calibrate_marginals``)."""
        out, spans = cls(), transformer.spans
        weights = _value_weights(probs, spans)
        categorical, continuous = kinds in ("both", "categorical"), kinds in ("both", "continuous")
        for span in spans:
            if span.start == pinned or span.role != "value":
                continue
            t = transformer.transforms[span.column]
            block = probs[:, span.start:span.stop].double()
            if isinstance(t, CategoricalTransform) and t.frequencies is not None and categorical:
                out.factors[span.start] = prior_shift(block, torch.as_tensor(t.frequencies, dtype=torch.float64))
            elif isinstance(t, ContinuousTransform) and t.encoding == "quantile" and continuous:
                out.maps[span.start] = normal_score_map(block[:, 0].numpy(), weights.get(span.column))
        return out

    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        """The corrected (N, D) probabilities / values (a new tensor)."""
        if not self.factors and not self.maps:
            return probs
        out = probs.clone()
        for start, f in self.factors.items():
            block = out[:, start:start + len(f)] * f.to(out.dtype)
            out[:, start:start + len(f)] = block / block.sum(1, keepdim=True).clamp_min(1e-12)
        for start, (x, y) in self.maps.items():
            out[:, start] = torch.from_numpy(_interp_linear_ends(out[:, start].double().numpy(), x, y)).to(out.dtype)
        return out


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
    order = np.argsort(values, kind="stable")
    v = values[order]
    w = np.ones(len(v)) if weights is None else np.clip(weights[order], 0.0, None)
    cdf = np.cumsum(w)
    if cdf[-1] <= 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    levels = np.arange(1, LEVELS + 1) / (LEVELS + 1)
    x = np.interp(levels * cdf[-1], cdf - w / 2, v)
    # A tie in the generated values (a run of equal knots) is one knot at the mean of its levels'
    # normal scores: the tied mass lands at the centre of its share, and the mapped mean stays 0.
    group = np.cumsum(np.r_[True, np.diff(x) > 1e-9]) - 1
    counts = np.bincount(group)
    return x[np.r_[0, np.cumsum(counts)[:-1]]], np.bincount(group, weights=ndtri(levels)) / counts


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


def reference_probs(model, rows: int = REFERENCE_ROWS) -> torch.Tensor:
    """The activated decoder output for ``rows`` rows over every cell at its cached share."""
    rng = np.random.default_rng(REFERENCE_SEED)
    g = torch.Generator().manual_seed(REFERENCE_SEED)
    cell = torch.from_numpy(model.cell_allocation(rows, None, rng))
    return model.feature_probs(cell, g, calibrated=False)
