"""Whole-distribution metrics on encoded features: covariance gap, MMD, precision and recall.

Privacy: these read real feature vectors; the numbers are NOT privacy-protected (for the data
owner, not for release).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.neighbors import NearestNeighbors

MMD_ROWS = 2000  # rows per side for MMD: the kernel matrices are quadratic in it
PR_ROWS = 5000  # rows per side for precision / recall
PR_K = 5  # k of the k-NN radii (Kynkäänniemi et al. 2019 use 3-5)
_CHUNK = 1024  # query rows per distance block, bounds memory to _CHUNK x PR_ROWS floats


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x``, drawn without replacement."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def covariance_gap(real: np.ndarray, synthetic: np.ndarray) -> tuple[float, float]:
    """(||cov_r - cov_s||_F, that over ||cov_r||_F); features in columns."""
    if real.shape[1] == 0 or len(real) < 2 or len(synthetic) < 2:
        return 0.0, 0.0
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_s = np.atleast_2d(np.cov(synthetic, rowvar=False))
    gap = float(np.linalg.norm(cov_r - cov_s, ord="fro"))
    scale = float(np.linalg.norm(cov_r, ord="fro"))
    return gap, gap / scale if scale > 0 else gap


def rbf_mmd2(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator,
             n: int = MMD_ROWS) -> float:
    """Unbiased MMD^2 with k(x, y) = exp(-||x - y||^2 / (2 s^2)), s = median pairwise distance
    of the real sample (median heuristic). About 0 for equal distributions (can dip below 0)."""
    x, y = subsample(real, n, rng), subsample(synthetic, n, rng)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    dxx = euclidean_distances(x, squared=True)
    off_diag = dxx[np.triu_indices(len(x), k=1)]
    sigma2 = float(np.median(off_diag)) or 1.0  # median of squared = (median distance)^2
    kxx = np.exp(-dxx / (2 * sigma2))
    kyy = np.exp(-euclidean_distances(y, squared=True) / (2 * sigma2))
    kxy = np.exp(-euclidean_distances(x, y, squared=True) / (2 * sigma2))
    m, k = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (k * (k - 1))
    return float(xx + yy - 2 * kxy.mean())


def precision_recall(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator,
                     n: int = PR_ROWS, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each sample is a union of balls: every point with the radius to its k-th nearest neighbour in
    its own sample. Precision = share of synthetic points inside the real balls; recall = share of
    real points inside the synthetic balls.
    """
    x, y = subsample(real, n, rng), subsample(synthetic, n, rng)
    if len(x) <= k or len(y) <= k:
        return float("nan"), float("nan")
    return _coverage(y, x, _knn_radius(x, k)), _coverage(x, y, _knn_radius(y, k))


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    # k + 1 because each point is its own nearest neighbour at distance 0
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


def _coverage(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    inside = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(queries), _CHUNK):
        d = euclidean_distances(queries[start:start + _CHUNK], centres)
        inside[start:start + _CHUNK] = (d <= radii[None, :] + 1e-9).any(axis=1)
    return float(inside.mean())
