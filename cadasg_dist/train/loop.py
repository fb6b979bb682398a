"""The one training loop: epochs of ``train_step`` over a batch source, with an optional budget guard.

Every runner drives ``TrainingLoop``: the local fit (``train.fit.fit_local``), the private fit
(``private.fit.fit_private``), the Tune trainable's rounds (``tuning.rounds.RoundTrainer``), the
Ray Train worker (``distributed.worker.WorkerRun``) and the Flower silo
(``federation.silo.SiloTrainer``). What differs between them is passed in, never copied:

* the batches of one epoch (``shuffled_batches``, ``split_batches`` or a private run's Poisson
  batches of units, ``private.sampling.UnitSampler``);
* the budget guard (a private run's ``private.step.DPState``), asked before every step, so a
  private run stops at the last step its ε covers;
* metrics hidden from the report (those computed on real rows in a private run);
* ``after_step`` (weight averaging, a worker's cache merge), called after every step whoever runs
  the loop.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.train.step import Batch, TrainState, train_step

log = logging.getLogger(__name__)

ProgressFn = Callable[["EpochReport"], None]
Metrics = dict[str, float]


@dataclass(frozen=True)
class EpochReport:
    """What a training loop tells its progress callback after each epoch.

    ``state`` and ``cache`` are the live networks and cache (not copies): a callback may sample
    from them (``tuning.rounds.snapshot_of``) but must not train or change them. In a private run
    both are DP releases, so sampling from them is post-processing and spends nothing; ``metrics``
    then holds only the step metrics computed from already-privatised quantities."""

    epoch: int
    epochs: int
    seconds: float
    metrics: Metrics
    epsilon: float | None = None
    state: TrainState | None = field(default=None, repr=False, compare=False)
    cache: ContextCache | None = field(default=None, repr=False, compare=False)


class BudgetGuard(Protocol):
    """What the loop asks before each step (``private.step.DPState`` is one)."""

    def allows_step(self) -> bool: ...

    def epsilon(self) -> float: ...


def use_threads(cfg: CADASGConfig) -> None:
    """Apply ``train.threads`` (0 keeps torch's default) before a runner builds its state."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def new_cache(dims: ModelDims, cfg: CADASGConfig, cache_config: CacheConfig | None = None) -> ContextCache:
    """The empty context cache of a model of ``dims`` (``cache_config`` defaults to ``cfg.cache``)."""
    return ContextCache(dims.contexts, dims.features, cfg.model.latent_dim,
                        cfg.cache if cache_config is None else cache_config, dims.strata)


def as_tensors(x: np.ndarray, context: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 features and (N,) int64 context ids, as every runner trains on them."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(context.astype(np.int64))


def shuffled_batches(xs: torch.Tensor, cs: torch.Tensor, batch_size: int, rng: np.random.Generator
                     ) -> Iterator[Batch]:
    """One epoch: shuffled batches of ``batch_size`` rows covering every row once (the last may be smaller)."""
    perm = rng.permutation(len(xs))
    for i in range(0, len(xs), batch_size):
        idx = perm[i:i + batch_size]
        yield Batch(xs[idx], cs[idx])


def split_batches(xs: torch.Tensor, cs: torch.Tensor, steps: int, rng: np.random.Generator) -> Iterator[Batch]:
    """One epoch in exactly ``steps`` shuffled, near-equal batches (a Ray worker's shard: as many
    steps as one worker takes on the whole table, so workers stay in lockstep)."""
    for idx in np.array_split(rng.permutation(len(xs)), steps):
        yield Batch(xs[idx], cs[idx])


@dataclass
class TrainingLoop:
    """Steps of ``train_step`` on ``state`` and ``cache``; ``run_epoch`` takes one epoch's batches."""

    cfg: CADASGConfig
    state: TrainState
    cache: ContextCache
    guard: BudgetGuard | None = None
    hidden: tuple[str, ...] = ()  # metrics never reported (computed on real rows in a private run)
    after_step: Callable[[], None] | None = None
    started: float = field(default_factory=time.perf_counter)

    def run_epoch(self, batches: Iterable[Batch]) -> Metrics | None:
        """Train on ``batches``, asking the guard before each step; the mean metrics, or None when
        the guard allowed no step."""
        sums: Metrics = {}
        done = 0
        for batch in batches:
            if self.guard is not None and not self.guard.allows_step():
                break
            metrics = train_step(self.cfg, self.state, batch, self.cache)
            if self.after_step is not None:
                self.after_step()
            done += 1
            for k, v in metrics.items():
                if k not in self.hidden:
                    sums[k] = sums.get(k, 0.0) + v
        if not done:
            return None
        return {k: v / done for k, v in sums.items()}

    def train(self, epoch_batches: Callable[[], Iterable[Batch]], count: int, *, total: int | None = None,
              progress: ProgressFn | None = None) -> None:
        """``epochs`` run to the end (the reports go to ``progress`` only)."""
        collections.deque(self.epochs(epoch_batches, count, total=total, progress=progress), maxlen=0)

    @property
    def stopped(self) -> bool:
        """Whether the budget guard has stopped training."""
        return self.guard is not None and getattr(self.guard, "stop_reason", None) is not None

    def epochs(self, epoch_batches: Callable[[], Iterable[Batch]], count: int, *, total: int | None = None,
               progress: ProgressFn | None = None) -> Iterator[EpochReport]:
        """Run up to ``count`` epochs (fewer when the guard stops training), appending each to the
        state's history and reporting it; ``total`` is the run's planned epochs (for the report)."""
        total = count if total is None else total
        for _ in range(count):
            means = self.run_epoch(epoch_batches())
            if means is not None:
                epoch = len(self.state.history) + 1
                self.state.history.append({"epoch": epoch, **means})
                report = EpochReport(epoch, total, time.perf_counter() - self.started, means,
                                     None if self.guard is None else self.guard.epsilon(),
                                     state=self.state, cache=self.cache)
                if progress is not None:
                    progress(report)
                if not all(math.isfinite(v) for v in means.values()):
                    log.warning("non-finite loss at epoch %d: %s", epoch, means)
                yield report
            if self.stopped:
                return
