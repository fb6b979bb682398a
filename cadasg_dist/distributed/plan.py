"""The partition plan: which worker trains on which context's rows. Pure, no Ray.

Contexts are packed onto workers largest first, each onto the least-loaded worker (LPT), so row
counts are balanced and a context lives on one worker whenever that keeps the worker within
``slack`` of the even share. A context too large for that is split: its rows fill the least-loaded
workers up to the even share, in pieces. Every worker then sees whole contexts (its cache holds all
of their rows) except for the few split ones, whose statistics the periodic cache merge sums.

Routing a row is a pure function of its context id and a uniform number ``u`` in [0, 1) derived
from the row itself (``row_uniforms``): a whole context goes to its worker; a split context's
pieces take consecutive intervals of [0, 1) in proportion to their planned rows. Every row goes to
exactly one worker; a split piece receives its planned rows up to binomial noise (about ±√n).

Privacy: the plan reads exact per-context counts. It changes nothing the model releases (gradients
and cache statistics are summed over workers, so the result does not depend on the partition), but
the plan itself is an exact count table: the run writes it to the operator's log and run directory,
and a private model's artifact stores only its shape (``ShardPlan.public_summary``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.errors import ConfigError

# A worker may exceed the even share by this fraction to keep a context whole.
DEFAULT_SLACK = 0.05


@dataclass(frozen=True)
class Piece:
    """``rows`` rows of one context, trained on ``worker``."""

    worker: int
    rows: int


@dataclass(frozen=True)
class ShardPlan:
    num_workers: int
    counts: tuple[int, ...]  # (C,) rows per context
    pieces: tuple[tuple[Piece, ...], ...]  # per context; () for an empty context

    # --- reading ------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def loads(self) -> tuple[int, ...]:
        """Planned rows per worker."""
        loads = [0] * self.num_workers
        for parts in self.pieces:
            for p in parts:
                loads[p.worker] += p.rows
        return tuple(loads)

    @property
    def imbalance(self) -> float:
        """Largest worker load over the even share (1.0 = perfect balance)."""
        even = self.total / self.num_workers
        return max(self.loads) / even if even > 0 else 1.0

    @property
    def split_contexts(self) -> tuple[int, ...]:
        return tuple(c for c, parts in enumerate(self.pieces) if len(parts) > 1)

    def contexts_of(self, worker: int) -> tuple[int, ...]:
        return tuple(c for c, parts in enumerate(self.pieces) if any(p.worker == worker for p in parts))

    # --- routing ------------------------------------------------------------------------------
    def route(self, context: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Worker of each row: ``context`` (R,) ids, ``u`` (R,) uniforms in [0, 1). Returns (R,) int64.

        A row of a context with no planned rows (unseen when the plan was made) goes to worker
        ``context % num_workers``, so no row is ever dropped.
        """
        context = np.asarray(context, dtype=np.int64)
        u = np.asarray(u, dtype=np.float64)
        if context.shape != u.shape:
            raise ValueError(f"context {context.shape} and u {u.shape} must have the same shape")
        if len(context) and (context.min() < 0 or context.max() >= len(self.counts)):
            raise ValueError(f"context ids must lie in [0, {len(self.counts)}), got {context.min()}..{context.max()}")
        owner, edges, workers = self._tables()
        out = owner[context].copy()
        for c in self.split_contexts:
            rows = np.flatnonzero(context == c)
            piece = np.searchsorted(edges[c], u[rows], side="right")  # index of the interval holding u
            out[rows] = workers[c][np.minimum(piece, len(workers[c]) - 1)]
        return out

    def _tables(self) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray]]:
        owner = np.arange(len(self.counts), dtype=np.int64) % self.num_workers
        edges: dict[int, np.ndarray] = {}
        workers: dict[int, np.ndarray] = {}
        for c, parts in enumerate(self.pieces):
            if len(parts) == 1:
                owner[c] = parts[0].worker
            elif len(parts) > 1:
                rows = np.array([p.rows for p in parts], dtype=np.float64)
                edges[c] = np.cumsum(rows)[:-1] / rows.sum()  # inner interval edges, (P-1,)
                workers[c] = np.array([p.worker for p in parts], dtype=np.int64)
        return owner, edges, workers

    # --- documents ----------------------------------------------------------------------------
    def describe(self, labels: list[str] | None = None) -> str:
        """The plan as text for the run's output: one line per worker, then the split contexts."""
        name = (lambda c: labels[c]) if labels else (lambda c: f"context {c}")
        loads = self.loads
        lines = [f"shard plan: {self.total} rows, {len(self.counts)} contexts, {self.num_workers} workers, "
                 f"imbalance {self.imbalance:.3f} (max load / even share)"]
        for w in range(self.num_workers):
            whole = [c for c in self.contexts_of(w) if len(self.pieces[c]) == 1]
            lines.append(f"  worker {w}: {loads[w]} rows, {len(whole)} whole contexts"
                         + (f" + pieces of {len(self.contexts_of(w)) - len(whole)} split" if
                            len(self.contexts_of(w)) > len(whole) else ""))
        for c in self.split_contexts:
            parts = ", ".join(f"worker {p.worker}: {p.rows}" for p in self.pieces[c])
            lines.append(f"  split {name(c)} ({self.counts[c]} rows) -> {parts}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "counts": list(self.counts),
                "pieces": [[[p.worker, p.rows] for p in parts] for parts in self.pieces]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardPlan:
        return cls(int(d["num_workers"]), tuple(int(n) for n in d["counts"]),
                   tuple(tuple(Piece(int(w), int(r)) for w, r in parts) for parts in d["pieces"]))

    def public_summary(self) -> dict[str, Any]:
        """What a private model may store: workers and contexts, nothing that depends on the counts
        (which contexts share a worker or are split does)."""
        return {"num_workers": self.num_workers, "contexts": len(self.counts)}

    def describe_shape(self) -> str:
        """The plan as a private run may show it: ``public_summary`` as one line."""
        return f"shard plan: {len(self.counts)} contexts over {self.num_workers} workers (counts withheld: private run)"


def row_uniforms(batch: pd.DataFrame) -> np.ndarray:
    """(R,) numbers in [0, 1), a pure function of each row's values (equal rows get equal numbers).

    Routing by content rather than position lets N independent readers agree on every row, in any
    block layout, and a restarted reader get the same rows again.
    """
    h = pd.util.hash_pandas_object(batch, index=False).to_numpy().astype(np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # top 53 bits: exact in a double


def make_plan(counts: np.ndarray | list[int], num_workers: int, *, slack: float = DEFAULT_SLACK) -> ShardPlan:
    """Assign contexts with ``counts`` (C,) rows to ``num_workers`` workers (LPT with splitting).

    Guarantees: every row of every context is planned exactly once; each worker's load is at most
    ``(1 + slack) * ceil(total / num_workers)``; a context is split only when placing it whole on
    the least-loaded worker would break that bound.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1:
        raise ConfigError(f"counts must be one count per context, got shape {counts.shape}")
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    if (counts < 0).any():
        raise ConfigError("context counts must be >= 0")
    if slack < 0:
        raise ConfigError(f"slack must be >= 0, got {slack}")
    total = int(counts.sum())
    if total < num_workers:
        raise ConfigError(f"{total} rows cannot feed {num_workers} workers; use fewer workers")
    even = math.ceil(total / num_workers)
    bound = math.floor(even * (1 + slack))
    loads = np.zeros(num_workers, dtype=np.int64)
    pieces: list[list[Piece]] = [[] for _ in counts]
    # Largest first; ties by id so the plan is deterministic.
    for c in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        n = int(counts[c])
        if n == 0:
            continue
        w = int(np.argmin(loads))
        if loads[w] + n <= bound:
            pieces[c].append(Piece(w, n))
            loads[w] += n
            continue
        while n > 0:  # split: fill the least-loaded workers up to the even share
            w = int(np.argmin(loads))
            take = min(n, max(even - int(loads[w]), 0)) or n  # nothing left below `even`: the rest here
            pieces[c].append(Piece(w, take))
            loads[w] += take
            n -= take
    return ShardPlan(num_workers, tuple(int(n) for n in counts), tuple(tuple(p) for p in pieces))
