"""Local training loop: epochs of ``train_step`` over shuffled batches, then the final cache pass.

This is the embedded default that ``CADASG.fit`` uses; distributed runners call the same
``train_step`` on their shard.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.cache import CacheStats, ContextCache
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.train.step import Batch, TrainState, train_step

log = logging.getLogger(__name__)

ProgressFn = Callable[["EpochReport"], None]


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
    metrics: dict[str, float]
    epsilon: float | None = None
    state: TrainState | None = field(default=None, repr=False, compare=False)
    cache: ContextCache | None = field(default=None, repr=False, compare=False)


def batches(n_rows: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches covering every row once (the last may be smaller)."""
    perm = rng.permutation(n_rows)
    return [perm[i:i + batch_size] for i in range(0, n_rows, batch_size)]


def fit_local(cfg: CADASGConfig, x: np.ndarray, context: np.ndarray, dims: ModelDims,
              progress: ProgressFn | None = None) -> tuple[TrainState, ContextCache]:
    """Train on (N, D) features ``x`` with (N,) context ids; returns the state and the cache."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    state = TrainState.create(dims, cfg)
    cache = ContextCache(dims.contexts, dims.features, cfg.model.latent_dim, cfg.cache, dims.strata)
    xs, cs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(context.astype(np.int64))
    rng = np.random.default_rng(cfg.train.seed)
    start = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        sums: dict[str, float] = {}
        parts = batches(len(xs), cfg.train.batch_size, rng)
        for idx in parts:
            metrics = train_step(cfg, state, Batch(xs[idx], cs[idx]), cache)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        means = {k: v / len(parts) for k, v in sums.items()}
        state.history.append({"epoch": epoch + 1, **means})
        if progress is not None:
            progress(EpochReport(epoch + 1, cfg.train.epochs, time.perf_counter() - start, means,
                                 state=state, cache=cache))
        if not all(math.isfinite(v) for v in means.values()):
            log.warning("non-finite loss at epoch %d: %s", epoch + 1, means)
    if cfg.cache.final_pass:
        final_cache_pass(cfg, state, cache, xs, cs)
    return state, cache


@torch.no_grad()
def final_cache_pass(cfg: CADASGConfig, state: TrainState, cache: ContextCache, xs: torch.Tensor,
                     cs: torch.Tensor, chunk: int = 8192, share: float = 1.0) -> CacheStats:
    """Re-estimate the cache over every row with the final encoder, as ONE noisy release.

    The EMA cache saw each context through a window of recent batches and an encoder that was
    still moving; the final pass gives rare contexts all their rows. Returns the exact
    (un-noised) local sums so a distributed caller can all-reduce them before noising.
    """
    nets = state.nets
    nets.eval()
    total = CacheStats.zeros(cache.n_cells, xs.shape[1], cfg.model.latent_dim)
    device = nets.device
    for i in range(0, len(xs), chunk):
        x, c = xs[i:i + chunk].to(device), cs[i:i + chunk].to(device)
        mean, logvar = nets.encoder(x, nets.one_hot(c))
        total = total + CacheStats.from_batch(x.cpu(), mean.cpu(), logvar.exp().cpu(), nets.dims.cells(x, c).cpu(),
                                              cache.n_cells, cfg.cache.clip_x, cfg.cache.clip_z)
    cache.reset()
    cache.update(total, state.generator, alpha=1.0, share=share)
    return total
