"""The local, non-private fit: the one training loop (``train.loop``) over shuffled batches, then
the final cache pass, which every runner ends with."""

from __future__ import annotations

import logging

import numpy as np
import torch

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.cache import CacheStats, ContextCache
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.train.loop import (
    EpochReport,
    ProgressFn,
    TrainingLoop,
    as_tensors,
    new_cache,
    shuffled_batches,
    use_threads,
)
from cadasg_dist.train.step import TrainState

log = logging.getLogger(__name__)

__all__ = ["EpochReport", "ProgressFn", "final_cache_pass", "fit_local"]


def fit_local(cfg: CADASGConfig, x: np.ndarray, context: np.ndarray, dims: ModelDims,
              progress: ProgressFn | None = None) -> tuple[TrainState, ContextCache]:
    """Train on (N, D) features ``x`` with (N,) context ids; returns the state and the cache."""
    use_threads(cfg)
    state = TrainState.create(dims, cfg)
    cache = new_cache(dims, cfg)
    xs, cs = as_tensors(x, context)
    rng = np.random.default_rng(cfg.train.seed)
    loop = TrainingLoop(cfg, state, cache)
    loop.train(lambda: shuffled_batches(xs, cs, cfg.train.batch_size, rng), cfg.train.epochs, progress=progress)
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
