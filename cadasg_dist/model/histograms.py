"""Histograms of encoded rows per group (a stratum of the target, a context): what the class and
context marginals release and what the marginal calibration (``model.calibration``) moves the
generator onto.

Every histogram is keyed by ``class_key(span)`` and counts, per group, a categorical column's
slots, a numeric column's atom and missing indicators, and a quantile-encoded value's normal score
in public cells of N(0, 1): ``CLASS_CELLS`` equal-probability cells for the per-stratum
histograms, cells of equal width (``CONTEXT_EDGES``) for the per-context ones. The cells are public
because the quantile encoding makes every released marginal N(0, 1).

Privacy: counted on real rows, these are raw statistics; the private preprocessing releases them
with Gaussian noise (each row adds at most 1 to each histogram) and only the release is stored.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from cadasg_dist.data.transforms import ContinuousTransform, DataTransformer, SpanInfo
from cadasg_dist.model.dims import ModelDims

# A continuous column's class histogram counts its normal scores in this many equal-probability
# cells of N(0, 1) (the quantile encoding makes the released marginal N(0, 1), so the cells are public).
CLASS_CELLS = 8
CLASS_EDGES = ndtri(np.arange(1, CLASS_CELLS) / CLASS_CELLS)  # their inner edges, as normal scores
# A continuous column's context histogram counts its normal scores in cells of equal *width* in score
# (the two tails beyond +-3 are cells too): a context that lives in the tail of the table's
# distribution still spans several of them (diamonds' Fair: its median depth is the 98th percentile
# of all rows, inside the top one of the class histograms' equal-probability cells).
CONTEXT_EDGES = np.linspace(-3.0, 3.0, 25)


def normal_cells(values: np.ndarray, edges: np.ndarray = CLASS_EDGES) -> np.ndarray:
    """The cell (0..len(edges)) of each normal score, cut at the inner ``edges`` (by default the
    class histograms' CLASS_CELLS equal-probability cells of N(0, 1))."""
    return np.searchsorted(edges, values, side="right")


def cell_levels(edges: np.ndarray) -> np.ndarray:
    """N(0, 1)'s CDF at the cells' edges, outer ends included: (len(edges) + 2,)."""
    return np.r_[0.0, ndtr(edges), 1.0]


def class_counts(x: np.ndarray, transformer: DataTransformer, dims: ModelDims,
                 resolution: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per span of every column but the target (keyed by ``class_key``), a (strata, CLASS_CELLS)
    histogram of encoded rows ``x`` by their stratum (``ModelDims.stratum``: the target's class, or
    a numeric target's value bin) (``group_counts``)."""
    target = dims.target_spans[0].column if dims.target_spans else None
    strata = dims.stratum(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
    return group_counts(x, transformer, strata, dims.strata, target, CLASS_EDGES, resolution)


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
    used = value_weights(torch.from_numpy(np.asarray(x)), transformer.spans)
    levels = cell_levels(edges)
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


def value_weights(probs: torch.Tensor, spans: tuple[SpanInfo, ...]) -> dict[str, np.ndarray]:
    """Per numeric column, the probability that a row's value is used (not the atom, not missing):
    the continuous map is fitted on the values that will be decoded."""
    weights: dict[str, np.ndarray] = {}
    for span in spans:
        if span.role in ("atom", "missing"):
            used = probs[:, span.start].double().numpy()  # slot 0: "other" / "present"
            weights[span.column] = weights.get(span.column, 1.0) * used
    return weights
