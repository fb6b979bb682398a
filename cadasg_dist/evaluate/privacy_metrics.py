"""Empirical privacy checks of synthetic rows against the training rows.

Privacy: these metrics compare synthetic rows with real *training* rows one by one, so their
output describes individual real records (how close the nearest one is). It is NOT
privacy-protected: for the data owner, not for release. They are also no proof of privacy: low
exact-match and an MIA AUC near 0.5 do not bound what a stronger attacker could learn; only the
model's (epsilon, delta) does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cadasg_dist.evaluate.distribution import subsample
from cadasg_dist.evaluate.prepare import NUMERIC_KINDS, category_keys, numeric_values
from cadasg_dist.privacy.audit import nearest_distance

NN_ROWS = 5000  # rows per side for DCR and the membership-inference queries


def row_hashes(df: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """64-bit hash of every row over the schema's columns, after normalising values so that the
    same row read from CSV or Parquet (1 vs 1.0, "1" vs 1) hashes the same."""
    norm = {}
    for name, kind in kinds.items():
        if kind in NUMERIC_KINDS:
            norm[name] = numeric_values(df[name], kind)
        else:
            norm[name] = category_keys(df[name], kind)
    return pd.util.hash_pandas_object(pd.DataFrame(norm), index=False).to_numpy()


def exact_match_rate(train: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> float:
    """Share of synthetic rows equal on every column to some training row (0 ideal)."""
    return float(np.isin(row_hashes(synthetic, kinds), row_hashes(train, kinds)).mean())


def dcr_share(train: np.ndarray, holdout: np.ndarray, synthetic: np.ndarray,
              rng: np.random.Generator, n: int = NN_ROWS) -> tuple[float, int]:
    """Share of synthetic rows whose closest record is a train row rather than a holdout row.

    Train and holdout are cut to the same size (else the larger set wins by sheer numbers), so a
    generator that does not copy scores about 0.5; ties count half. Returns (share, rows per set).
    """
    m = min(len(train), len(holdout), n)
    t, h = subsample(train, m, rng), subsample(holdout, m, rng)
    s = subsample(synthetic, n, rng)
    d_train, d_hold = nearest_distance(t, s)[:, 0], nearest_distance(h, s)[:, 0]
    share = float(np.mean(d_train < d_hold) + 0.5 * np.mean(d_train == d_hold))
    return share, m


def mia_auc(train: np.ndarray, holdout: np.ndarray, synthetic: np.ndarray,
            rng: np.random.Generator, n: int = NN_ROWS) -> tuple[float, int]:
    """AUC of a distance attack telling train rows (members) from holdout rows (non-members).

    The attack scores each candidate by minus its distance to the closest synthetic row, on equal
    numbers of members and non-members. 0.5 = no better than a coin; 1 = every member is revealed.
    ``synthetic`` is the attacker's whole reference set (the caller bounds its size).
    """
    m = min(len(train), len(holdout), n)
    members, others = subsample(train, m, rng), subsample(holdout, m, rng)
    d = nearest_distance(synthetic, np.vstack([members, others]))[:, 0]
    labels = np.r_[np.ones(m), np.zeros(m)]
    return float(roc_auc_score(labels, -d)), m
