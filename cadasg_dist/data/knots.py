"""Piecewise-linear maps through sorted knots, evaluated by table lookup.

Sampling evaluates a few such maps per value (the marginal calibration's monotone maps, the
quantile decode of a continuous column) on every row; ``np.interp`` pays a binary search per value.
``KnotTable`` finds each value's segment from a uniform grid of buckets in a few vector passes and
then does ``np.interp``'s own arithmetic, so its results are the same to the bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class KnotTable:
    """``np.interp(v, x, y)`` extended past the ends with the end slopes, as a table lookup, to the
    bit: a uniform grid of buckets over the knots gives each value its segment in a few vector
    passes instead of a binary search per value; then the same arithmetic as ``np.interp``
    (slope * (v - x_j) + y_j) on the same segment. Knots: ``x`` strictly increasing, two or more.
    Built once per map (``knot_table``); sampling calls it on every block."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        k = len(x)
        self.lo, span = float(x[0]), float(x[-1] - x[0])
        buckets = 64
        while True:  # the fewest buckets (a power of two, at most 2**16) holding at most one knot each
            edges = self.lo + np.arange(buckets + 1) * (span / buckets)
            most = int(np.diff(np.searchsorted(x, edges, side="right")).max(initial=0))
            if most <= 1 or buckets >= 2**16:
                break
            buckets *= 2
        self.scale, self.last = buckets / span, buckets - 1
        # the segment at a bucket's left edge, one lower for rounding; ``steps`` comparisons move up from it
        self.first = np.clip(np.searchsorted(x, edges[:-1], side="right") - 2, 0, k - 1)
        self.steps = most + 2
        self.x_next = np.r_[x[1:], np.inf]
        slope = np.diff(y) / np.diff(x)
        self.anchor_x, self.anchor_y = x, y
        self.slope = np.r_[slope, slope[-1]]  # past the last knot: the end slope, from the last knot

    def __call__(self, v: np.ndarray) -> np.ndarray:
        b = (np.nan_to_num(v, nan=self.lo) - self.lo) * self.scale
        seg = self.first[np.clip(b, 0, self.last).astype(np.int64)]
        for _ in range(self.steps):
            seg += self.x_next[seg] <= v
        return self.slope[seg] * (v - self.anchor_x[seg]) + self.anchor_y[seg]


_TABLES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, KnotTable | None]] = {}


def knot_table(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The map through knots (x, y) as a function of an array: a ``KnotTable``, cached by the arrays'
    identity (so they must not be changed in place afterwards)."""
    hit = _TABLES.get((id(x), id(y)))
    if hit is None or hit[0] is not x or hit[1] is not y:
        if len(_TABLES) > 4096:
            _TABLES.clear()
        hit = _TABLES[(id(x), id(y))] = (x, y, KnotTable(x, y) if len(x) >= 2 and x[-1] > x[0] else None)
    table = hit[2]
    return table if table is not None else (lambda v: v - x[0] + y[0])
