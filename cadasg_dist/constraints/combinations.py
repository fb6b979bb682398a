"""Fixed combinations: the joint values of some categorical columns are one of a listed set.

Repair (for rows that bounded redraws did not fix): the allowed combination nearest the row, that
is, one that keeps the columns the row's cell fixes (its context, its class) and, among those,
agrees with the row on the most other columns; ties go to the combination most frequent among
the draw's rows that satisfy every rule, then to the first listed. Deterministic, and it keeps the
context and class shares exact. Only when no allowed combination agrees with the fixed columns
does a repair change one of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.constraints.base import Rule, key_codes, label_key, put

_BLOCK = 4096  # rows scored at once against every allowed combination (memory: block x allowed)


class Combinations(Rule):
    """The tuple of ``columns`` values is one of ``allowed`` (values as the columns store them)."""

    kind = "combinations"

    def __init__(self, columns: tuple[str, ...], allowed: list[tuple[Any, ...]], source: str = "declared") -> None:
        self._columns = tuple(columns)
        self.allowed = [tuple(row) for row in allowed]
        self.source = source  # "declared", or "data": read from the table by a non-private fit
        keys = [[label_key(v) for v in row] for row in self.allowed]
        # per column, its allowed values' keys -> a small code; each allowed row as codes and as one id
        self._vocab = [{k: i for i, k in enumerate(dict.fromkeys(row[j] for row in keys))}
                       for j in range(len(self._columns))]
        self._codes = np.array([[self._vocab[j][k] for j, k in enumerate(row)] for row in keys], dtype=np.int64)
        self._radix = np.array([len(v) for v in self._vocab], dtype=np.int64)
        self._ids = self._id(self._codes)

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def describe(self) -> str:
        return f"combinations of {', '.join(self._columns)} ({len(self.allowed)} allowed, {self.source})"

    def _id(self, codes: np.ndarray) -> np.ndarray:
        """One integer per row of codes (-1 when a value is in no allowed combination or missing)."""
        ids = np.zeros(len(codes), dtype=object if np.prod(self._radix.astype(float)) > 2**62 else np.int64)
        for j, radix in enumerate(self._radix.tolist()):
            ids = ids * radix + codes[:, j]
        return np.where((codes < 0).any(axis=1), -1, ids)

    def _row_codes(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) codes of each row's values (-1: in no allowed combination, -2: missing), and which
        rows have a missing value."""
        codes = np.stack([key_codes(frame[c], self._vocab[j]) for j, c in enumerate(self._columns)], axis=1) \
            if len(frame) else np.empty((0, len(self._columns)), dtype=np.int64)
        return codes, (codes == -2).any(axis=1)

    def violated(self, frame: pd.DataFrame) -> np.ndarray:
        codes, absent = self._row_codes(frame)
        return ~np.isin(self._id(codes), self._ids) & ~absent

    def repair(self, frame: pd.DataFrame, fixed: frozenset[str], reference: pd.DataFrame) -> None:
        rows = np.flatnonzero(self.violated(frame))
        if rows.size == 0:
            return
        codes, _ = self._row_codes(frame.iloc[rows])
        freq = self._frequency(reference)
        pick = np.concatenate([self._nearest(codes[i:i + _BLOCK], fixed, freq) for i in range(0, len(codes), _BLOCK)])
        for j, column in enumerate(self._columns):
            change = codes[:, j] != self._codes[pick, j]
            values = np.array([self.allowed[p][j] for p in pick[change]], dtype=object)
            put(frame, column, rows[change], values)

    def _frequency(self, reference: pd.DataFrame) -> np.ndarray:
        """How often each allowed combination appears among the satisfying rows of the draw."""
        ids = self._id(self._row_codes(reference)[0])
        order = np.argsort(self._ids, kind="stable")
        at = np.searchsorted(self._ids[order], ids)
        hit = (at < len(order)) & (self._ids[order][np.minimum(at, len(order) - 1)] == ids)
        return np.bincount(order[at[hit]], minlength=len(self.allowed)).astype(np.int64)

    def _nearest(self, codes: np.ndarray, fixed: frozenset[str], freq: np.ndarray) -> np.ndarray:
        """Index of the allowed combination nearest each row (the order in the module docstring)."""
        same = codes[:, None, :] == self._codes[None, :, :]  # (r, m, k)
        agree = same.sum(axis=2).astype(np.int64)
        held = [j for j, c in enumerate(self._columns) if c in fixed]
        keeps = same[:, :, held].all(axis=2) if held else np.ones(agree.shape, dtype=bool)
        k, top = len(self._columns), int(freq.max(initial=0)) + 1
        score = (keeps.astype(np.int64) * (k + 1) + agree) * top + freq[None, :]
        return score.argmax(axis=1)  # the first listed among equal scores

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": list(self._columns), "allowed": [list(row) for row in self.allowed],
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Combinations:
        return cls(tuple(d["columns"]), [tuple(row) for row in d["allowed"]], d.get("source", "declared"))
