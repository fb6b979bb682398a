"""Which rows a private run reads: units capped to ``privacy.max_rows_per_unit`` rows, and
Poisson batches of units.

Both draw from the OS's entropy: amplification by subsampling needs a secret sample, and a seeded
choice of the rows a unit keeps would couple one unit's presence to the other units' rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.private.step import noise_generator


class UnitSampler:
    """Poisson sampling of units: each unit joins each batch independently with probability q."""

    def __init__(self, units: np.ndarray, sample_rate: float, seed: int | None = None) -> None:
        order = np.argsort(units, kind="stable")
        self.rows = torch.from_numpy(order)
        counts = np.bincount(units)
        self.starts = torch.from_numpy(np.r_[0, np.cumsum(counts)[:-1]])
        self.counts = torch.from_numpy(counts)
        self.q = sample_rate
        self.generator = noise_generator(seed, 104729)  # None: secret; amplification needs a secret sample

    def sample(self) -> tuple[Tensor, Tensor]:
        """(rows, unit index within the batch) of one Poisson batch (may be empty)."""
        chosen = (torch.rand(len(self.counts), generator=self.generator) < self.q).nonzero().squeeze(1)
        sizes = self.counts[chosen]
        local = torch.repeat_interleave(torch.arange(len(chosen)), sizes)
        offsets = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        rows = self.rows[torch.repeat_interleave(self.starts[chosen], sizes) + offsets]
        return rows, local


def cap_units(df: pd.DataFrame, cfg: CADASGConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Keep at most ``privacy.max_rows_per_unit`` rows of each unit, chosen at random.

    Returns the capped table and each row's unit index (0..U-1), or (df, None) for row-level
    privacy. With secret randomness, the rows a unit keeps are independent of the other units, so
    capping costs nothing; a seeded choice would not be (adding a unit reshuffles the others).
    """
    unit = cfg.privacy.unit
    if unit is None:
        return df, None
    if unit not in df.columns:
        raise InvalidDataError(f"unknown privacy unit column {unit!r}; columns: {', '.join(map(str, df.columns))}")
    if unit == cfg.target or unit in cfg.context.columns:
        raise ConfigError(f"the privacy unit column {unit!r} cannot be the target or a context column")
    if df[unit].isna().any():
        raise InvalidDataError(f"privacy unit column {unit!r} has missing values: a row without a unit "
                               "cannot have its contribution bounded; fill or drop them")
    codes, _ = pd.factorize(df[unit])
    order = rng.permutation(len(df))
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = pd.Series(codes[order]).groupby(codes[order]).cumcount().to_numpy()
    keep = np.flatnonzero(rank < cfg.privacy.max_rows_per_unit)
    units, _ = pd.factorize(codes[keep])
    return df.iloc[keep].reset_index(drop=True), units.astype(np.int64)
