"""Encoded training rows held compactly: a one-hot span as the index of its 1.

An encoded row is D float32 values, most of them in softmax spans that are exactly one-hot for a
real row (a category, a mode indicator, a missing flag). ``EncodedRows`` keeps the other columns as
float32 and each one-hot span as one small integer, and builds the float32 rows of a batch when it
is indexed: on HI (4 dense columns, 10 spans over 36 columns) a row takes 26 bytes instead of 160,
which is what bounds a Ray worker's memory on a large shard. The batch a step sees is bit for bit
the row the transformer encoded. Should a batch ever hold a span that is not exactly one-hot, the
store falls back to keeping every row whole (float32), before that batch, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class EncodedRows:
    """(n, D) float32 encoded rows, appended batch by batch; indexing (an index array, a tensor of
    indices or a slice) returns a fresh float32 tensor of those rows."""

    def __init__(self, spans: Sequence[Any], features: int, capacity: int = 0) -> None:
        self.features = features
        self.spans = [(s.start, s.stop) for s in spans if s.kind == "softmax" and s.width <= 255]
        hot = {c for a, b in self.spans for c in range(a, b)}
        self.dense_cols = np.array([c for c in range(features) if c not in hot], dtype=np.int64)
        self.starts = np.array([a for a, _ in self.spans], dtype=np.int64)
        self.n = 0
        self._dense = np.empty((capacity, len(self.dense_cols)), np.float32)
        self._codes = np.empty((capacity, len(self.spans)), np.uint8)
        self._whole: np.ndarray | None = None if self.spans else np.empty((capacity, features), np.float32)

    @property
    def compact(self) -> bool:
        return self._whole is None

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.features

    def __len__(self) -> int:
        return self.n

    def nbytes(self) -> int:
        """Bytes of the rows held (not of the spare capacity)."""
        if self._whole is not None:
            return self.n * self.features * 4
        return self.n * (len(self.dense_cols) * 4 + len(self.spans))

    def append(self, x: np.ndarray) -> None:
        """Add rows ``x`` ((k, D) float32), growing the store by a quarter when full."""
        if x.shape[1] != self.features:
            raise ValueError(f"rows of {x.shape[1]} features appended to a store of {self.features}")
        codes = self._codes_of(x) if self._whole is None else None
        if codes is None and self._whole is None:  # this batch is not one-hot on a span: keep rows whole
            self._whole = self._rows(np.arange(self.n), max(len(self._dense), self.n + len(x)))
            self._dense = self._codes = np.empty((0, 0))
        end = self.n + len(x)
        if end > self._capacity():
            self._grow(max(end, self._capacity() * 5 // 4))
        if self._whole is not None:
            self._whole[self.n:end] = x
        else:
            self._dense[self.n:end] = x[:, self.dense_cols]
            self._codes[self.n:end] = codes
        self.n = end

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, slice):
            index = np.arange(self.n)[index]
        elif isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < -self.n or index.max() >= self.n):
            raise IndexError(f"row index out of range for {self.n} rows")
        return torch.from_numpy(self._rows(index % max(self.n, 1), len(index)))

    def _rows(self, index: np.ndarray, size: int) -> np.ndarray:
        """A fresh (size, D) float32 array whose first len(index) rows are the rows at ``index``."""
        if self._whole is not None:
            out = np.empty((size, self.features), np.float32)
            np.take(self._whole, index, axis=0, out=out[:len(index)])
            return out
        out = np.zeros((size, self.features), np.float32)
        k = len(index)
        out[:k, self.dense_cols] = self._dense[index]
        flat = out.reshape(-1)
        flat[(np.arange(k) * self.features)[:, None] + self.starts[None, :] + self._codes[index]] = 1.0
        return out

    def _codes_of(self, x: np.ndarray) -> np.ndarray | None:
        """Each span's index of the 1 in rows ``x``; None when a span is not exactly one-hot."""
        codes = np.empty((len(x), len(self.spans)), np.uint8)
        for j, (a, b) in enumerate(self.spans):
            block = x[:, a:b]
            if not (np.all((block == 0.0) | (block == 1.0)) and np.all(block.sum(axis=1) == 1.0)):
                return None
            codes[:, j] = block.argmax(axis=1)
        return codes

    def _capacity(self) -> int:
        return len(self._whole) if self._whole is not None else len(self._dense)

    def _grow(self, capacity: int) -> None:
        def grown(a: np.ndarray) -> np.ndarray:
            out = np.empty((capacity, *a.shape[1:]), a.dtype)
            out[:self.n] = a[:self.n]
            return out

        if self._whole is not None:
            self._whole = grown(self._whole)
        else:
            self._dense, self._codes = grown(self._dense), grown(self._codes)
