"""Every synthetic row satisfies every declared constraint: redraw first, then repair.

The rule, applied to each chunk of decoded rows (``ConstraintSet.enforce``, called once, from the
sampler's per-chunk draw):

1. **Redraw.** Rows that break any rule are drawn again from the same cells (same context, same
   class), up to ``REDRAW_TRIES`` times; a fresh row that satisfies every rule takes the place of
   the broken one. This is rejection sampling: the kept rows follow the model's distribution
   within its cell conditioned on the constraints, so the distributions stay honest and the
   context and class shares stay exact.
2. **Repair.** Rows still broken after the last try are repaired deterministically, rule after rule
   in declaration order (clip into the range or the band, sort the pair of an inequality, the
   nearest allowed combination), over at most ``REPAIR_PASSES`` passes; a row that no pass fixes
   means the rules contradict each other, a ``ConfigError``.

``stats`` counts, over the set's life, the rows drawn, redrawn and repaired, so the share that
repairs shaped can be read (``CADASG.constraints.stats``).

Privacy: constraints are declared (public) or, without DP only, read from the table; enforcing them
reads only the model's draws, so sampling stays post-processing and spends no budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.constraints.base import Rule, rule_from_dict
from cadasg_dist.errors import ConfigError

log = logging.getLogger(__name__)

# Redraws of a broken row from its cell before it is repaired; each draws only the rows still broken.
REDRAW_TRIES = 10
# Passes of the repairs over the rows still broken (one usually suffices; more for rules sharing a column).
REPAIR_PASSES = 4


class ConstraintSet:
    """The model's rules, and the one place they are enforced on sampled rows."""

    def __init__(self, rules: list[Rule] | None = None, fixed: tuple[str, ...] = ()) -> None:
        self.rules = list(rules or [])
        self.fixed = frozenset(fixed)  # columns a row's cell sets: categorical context columns, the target
        self.stats = {"rows": 0, "redrawn": 0, "repaired": 0}

    def __len__(self) -> int:
        return len(self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def describe(self) -> list[str]:
        return [rule.describe() for rule in self.rules]

    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        """(N,) bool: rows that break at least one rule."""
        bad = np.zeros(len(frame), dtype=bool)
        for rule in self.rules:
            bad |= rule.violated(frame)
        return bad

    def enforce(self, frame: pd.DataFrame, cells: np.ndarray, redraw: Callable[[np.ndarray], pd.DataFrame]
                ) -> pd.DataFrame:
        """``frame`` (decoded rows of ``cells``) with every broken row redrawn or repaired, in place
        of the broken one; ``redraw(cells)`` decodes fresh rows for the given cells."""
        if not self.rules or len(frame) == 0:
            return frame
        bad = self.violated(frame)
        parts, part, row = [frame], np.zeros(len(frame), dtype=np.int64), np.arange(len(frame))
        redrawn = 0
        for _ in range(REDRAW_TRIES):
            idx = np.flatnonzero(bad)
            if idx.size == 0:
                break
            fresh = redraw(cells[idx]).reset_index(drop=True)
            ok = ~self.violated(fresh)
            parts.append(fresh)
            part[idx[ok]], row[idx[ok]] = len(parts) - 1, np.flatnonzero(ok)
            bad[idx[ok]] = False
            redrawn += int(ok.sum())
        idx = np.flatnonzero(bad)
        if idx.size:
            good = _assemble(parts, part[~bad], row[~bad], frame)
            fixed = self._repaired(frame.iloc[idx].reset_index(drop=True), good)
            parts.append(fixed)
            part[idx], row[idx] = len(parts) - 1, np.arange(idx.size)
        self.stats["rows"] += len(frame)
        self.stats["redrawn"] += redrawn
        self.stats["repaired"] += int(idx.size)
        log.debug("constraints: %d rows, %d redrawn, %d repaired", len(frame), redrawn, idx.size)
        return _assemble(parts, part, row, frame) if len(parts) > 1 else frame

    def _repaired(self, rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
        for _ in range(REPAIR_PASSES):
            for rule in self.rules:
                rule.repair(rows, self.fixed, reference)
            if not self.violated(rows).any():
                return rows
        broken = [rule.describe() for rule in self.rules if rule.violated(rows).any()]
        raise ConfigError(f"the constraints cannot all hold on {int(self.violated(rows).sum())} sampled rows "
                          f"({'; '.join(broken)} still broken after repair): check that they do not contradict "
                          "each other or the columns' bounds")

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [rule.to_dict() for rule in self.rules], "fixed": sorted(self.fixed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConstraintSet:
        return cls([rule_from_dict(r) for r in d.get("rules", [])], tuple(d.get("fixed", ())))


def _assemble(parts: list[pd.DataFrame], part: np.ndarray, row: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    """Row ``i`` of the result is row ``row[i]`` of ``parts[part[i]]``, in ``like``'s dtypes where they hold."""
    offsets = np.cumsum([0] + [len(p) for p in parts])
    stacked = pd.concat(parts, ignore_index=True)
    out = stacked.iloc[offsets[part] + row].reset_index(drop=True)
    for column in out.columns:
        if out[column].dtype != like[column].dtype:
            try:
                out[column] = out[column].astype(like[column].dtype)
            except (TypeError, ValueError):
                pass  # a value the first draw's dtype cannot hold (a missing value in an int column)
    return out
