"""``KnotTable``: the table lookup sampling uses for piecewise-linear maps gives ``np.interp``'s
values to the bit (and the end-slope extension of the calibration maps outside the knots)."""

from __future__ import annotations

import numpy as np
import pytest

from cadasg_dist.data.knots import KnotTable, knot_table
from cadasg_dist.model.calibration import _interp_linear_ends


@pytest.mark.parametrize("seed", range(40))
def test_knot_table_is_interp_to_the_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # clustered and spread knots (Cauchy, rounded: dense runs and far outliers), ties in y
    x = np.unique(np.round(rng.standard_cauchy(size=int(rng.integers(2, 400))), int(rng.integers(1, 6))))
    if len(x) < 2:
        x = np.array([0.0, 1.0])
    y = np.sort(np.round(rng.normal(size=len(x)), 1))
    v = np.r_[rng.normal(size=4000) * rng.uniform(0.1, 100), x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)]
    table = KnotTable(x, y)
    assert np.array_equal(table(v), _interp_linear_ends(v, x, y))
    inside = v[(v >= x[0]) & (v <= x[-1])]
    assert np.array_equal(table(inside), np.interp(inside, x, y))


def test_knot_table_nan_and_cache() -> None:
    x, y = np.array([0.0, 0.5, 2.0]), np.array([1.0, 2.0, 2.0])
    out = knot_table(x, y)(np.array([np.nan, 0.25, 3.0, -1.0]))
    assert np.isnan(out[0])
    assert out[1:].tolist() == [1.5, 2.0, -1.0]
    assert knot_table(x, y) is knot_table(x, y)
    one = knot_table(np.array([1.0]), np.array([5.0]))
    assert one(np.array([2.0])).tolist() == [6.0]  # one knot: a shift, as ``_interp_linear_ends``
