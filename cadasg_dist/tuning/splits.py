"""Which rows tune and which rows train the final model.

    final | tuning = trials' training rows + validation rows

Privacy caveat first: the search reads the tuning rows without any noise (validation scores), and
which configuration wins depends on them, so the tuning rows have NO differential-privacy
guarantee. The final model trains on the ``final`` rows only, so its ledger's ε covers exactly
those rows, and they never reach a trial or a score. With a privacy unit (``privacy.unit``, e.g. a
person id) the split is by unit, so no person has rows on both sides.

The split is a fixed-seed permutation of row positions (or units): it depends on no value in the
table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cadasg_dist.errors import InvalidDataError

MIN_ROWS = 20  # fewer tuning-train or validation rows than this cannot score anything


@dataclass(frozen=True)
class TuningSplit:
    final: pd.DataFrame  # the final model trains on these, and only these
    train: pd.DataFrame  # trials train on these
    validation: pd.DataFrame  # trials are scored on these

    def sizes(self) -> dict[str, int]:
        return {"final_rows": len(self.final), "tuning_train_rows": len(self.train),
                "validation_rows": len(self.validation)}


def split_for_tuning(frame: pd.DataFrame, *, tune_fraction: float, validation_fraction: float, seed: int,
                     unit: str | None = None) -> TuningSplit:
    """Deterministic three-way split by row position (or by ``unit`` value when given)."""
    if unit is not None and unit not in frame.columns:
        raise InvalidDataError(f"unknown privacy unit column {unit!r}; columns: {', '.join(map(str, frame.columns))}")
    keys = (pd.factorize(frame[unit], use_na_sentinel=False)[0] if unit is not None
            else np.arange(len(frame)))  # (N,) the group each row moves with
    n_groups = int(keys.max()) + 1 if len(keys) else 0
    order = np.random.default_rng(seed).permutation(n_groups)
    n_tune = int(round(n_groups * tune_fraction))
    n_val = int(round(n_tune * validation_fraction))
    part = np.empty(n_groups, dtype=np.int8)  # 0 final, 1 tuning-train, 2 validation
    part[order[n_tune:]] = 0
    part[order[:n_tune - n_val]] = 1
    part[order[n_tune - n_val:n_tune]] = 2
    rows = part[keys]
    split = TuningSplit(*(frame[rows == p].reset_index(drop=True) for p in (0, 1, 2)))
    small = {k: v for k, v in split.sizes().items() if v < MIN_ROWS}
    if small:
        raise InvalidDataError(f"the table ({len(frame)} rows) is too small to tune: {small}; each part needs "
                               f"{MIN_ROWS} rows (raise search.tune_fraction or search.validation_fraction)")
    return split
