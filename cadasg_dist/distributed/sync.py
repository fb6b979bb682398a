"""What workers exchange: gradients every step, loss-balancing norms every step, caches every K steps.

Gradients. ``GradientSync`` all-reduces (mean) each optimizer's gradients in a step *pre-hook*:
``train_step`` runs unchanged, and every ``opt.step()`` it makes sees the global gradient. We do
not wrap the networks in DDP: one engine step runs the critic several times (fake rows, real rows,
the gradient penalty's double backward), measures gradient norms with ``autograd.grad`` for loss
balancing, and under DP computes per-example gradients through ``torch.func``. DDP's reducer
assumes one forward and one backward per iteration and sees none of the ``torch.func`` gradients.
The pre-hook reduces exactly what each optimizer is about to apply, with the same bytes on the wire
as DDP (one all-reduce of each network's gradients per update), at the cost of not overlapping
communication with backward, which these small MLPs do not need.

Under DP each worker clips its examples, adds ``1/N`` of the noise variance and divides by
``q·n/N``; the mean over workers is then the sum of every clipped example plus noise of exactly the
calibrated variance, divided by ``q·n``: one DP-SGD step on the global Poisson batch
(``private.step`` exposes the share and the divisor).

Caches. ``ShardCache`` keeps the merged (global) statistics and the worker's own updates since the
last merge; ``sync`` all-reduces those updates, which each worker noised with ``1/N`` of the
calibrated variance, so the merged release carries the calibrated noise and no un-noised
statistic leaves a worker. Caveat: one worker's contribution alone carries only ``1/N`` of the
variance, and ring all-reduce shows partial sums to peers: the guarantee is against whoever sees
the trained model, with the workers of one run trusting each other (run them on a private network).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields

import torch
import torch.distributed as dist

from cadasg_dist.config import CacheConfig, LossConfig
from cadasg_dist.context.cache import CacheStats, ContextCache, decayed_noise
from cadasg_dist.train.balancing import LossBalancer
from cadasg_dist.train.step import TrainState

Reduce = Callable[[torch.Tensor], torch.Tensor]


class Collectives:
    """Sum/mean all-reduce over the run's process group (identity for one worker), with a byte count."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.bytes_sent = {"gradients": 0, "balancer": 0, "cache": 0, "metrics": 0}
        self.calls = dict.fromkeys(self.bytes_sent, 0)
        # Wall seconds inside all-reduce, waiting for the slowest worker included.
        self.seconds = dict.fromkeys(self.bytes_sent, 0.0)

    def sum(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """In place: ``t`` becomes the sum over workers. Counts the payload under ``kind``."""
        self.bytes_sent[kind] += t.numel() * t.element_size()
        self.calls[kind] += 1
        if self.world_size > 1:
            start = time.perf_counter()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            self.seconds[kind] += time.perf_counter() - start
        return t

    def mean(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        return self.sum(t, kind).div_(self.world_size)

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.broadcast(t, src=0)
        return t


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


class GradientSync:
    """Mean all-reduce of an optimizer's gradients just before each of its steps."""

    def __init__(self, state: TrainState, comm: Collectives) -> None:
        self.comm = comm
        self.handles = [opt.register_step_pre_hook(self._hook)
                        for opt in (state.opt_generator, state.opt_critic, state.opt_utility)]

    def _hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        # Which parameters have a gradient is fixed by the step's structure, not by the data, so
        # every worker reduces the same list in the same order.
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = self.comm.mean(flatten(grads), "gradients")  # (P,) one message per optimizer step
        unflatten_into(flat, grads)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class SyncedBalancer(LossBalancer):
    """Loss balancer fed the workers' mean gradient norms, so every worker holds the same λ's."""

    def __init__(self, config: LossConfig, comm: Collectives) -> None:
        super().__init__(config)
        self.comm = comm

    def update(self, grad_norms: dict[str, float]) -> dict[str, float]:
        names = sorted(grad_norms)
        norms = self.comm.mean(torch.tensor([grad_norms[k] for k in names], dtype=torch.float64), "balancer")
        return super().update(dict(zip(names, norms.tolist())))


class ShardCache(ContextCache):
    """One worker's cache: the merged statistics (decayed in step) plus its own updates since the merge.

    Training reads ``stats``: the merged statistics plus, when training is not private, this
    worker's pending updates (fresh statistics for its own contexts). When it is private the
    pending updates carry only ``1/N`` of the noise, so training reads the merged release alone.
    With one worker this is exactly ``ContextCache``'s EMA.
    """

    def __init__(self, n_contexts: int, dim: int, latent: int, config: CacheConfig, strata: int = 1, *,
                 world_size: int = 1, private: bool = False) -> None:
        super().__init__(n_contexts, dim, latent, config, strata)
        self.world_size = world_size
        self.private = private
        self.merged = self.stats
        self.pending = CacheStats.zeros(self.n_cells, dim, latent)
        self.merged_noise = self.noise_var  # noise variance per entry of ``merged`` (BLOCKS order)
        self.pending_noise = torch.zeros_like(self.noise_var)  # of this worker's ``pending``
        self.decay = 1.0  # product of the EMA factors applied since the last merge
        self.pending_updates = 0  # the same on every worker: they update in lockstep

    def update(self, batch: CacheStats, generator: torch.Generator | None = None, alpha: float | None = None,
               share: float = 1.0) -> None:
        """Fold one batch into the pending updates, noised with ``share / N`` of the variance."""
        a = self.config.ema_alpha if alpha is None else alpha
        self.pending = self.pending.scale(a) + batch.noised(self.config, generator, share / self.world_size)
        self.pending_noise = decayed_noise(self.pending_noise, a, self.config, share / self.world_size)
        self.decay *= a
        self.pending_updates += 1
        self.releases += 1
        self._refresh()

    def reset(self) -> None:
        super().reset()
        self.merged = self.stats
        self.pending = CacheStats.zeros(*self._shape())
        self.merged_noise = self.noise_var
        self.pending_noise = torch.zeros_like(self.noise_var)
        self.decay = 1.0
        self.pending_updates = 0

    def outgoing(self) -> torch.Tensor:
        """This worker's noised pending updates, flat (what it sends to the merge)."""
        return flatten([getattr(self.pending, f.name) for f in fields(CacheStats)])

    def absorb(self, total: torch.Tensor) -> None:
        """Fold the sum over workers of ``outgoing()`` into the merged statistics."""
        summed = CacheStats.zeros(*self._shape())
        unflatten_into(total, [getattr(summed, f.name) for f in fields(CacheStats)])
        self.merged = self.merged.scale(self.decay) + summed
        # every worker added the same noise variance (lockstep): the sum holds world_size of them
        self.merged_noise = self.decay ** 2 * self.merged_noise + self.world_size * self.pending_noise
        self.pending = CacheStats.zeros(*self._shape())
        self.pending_noise = torch.zeros_like(self.noise_var)
        self.decay = 1.0
        self.pending_updates = 0
        self._refresh()

    def sync(self, comm: Collectives) -> None:
        self.absorb(comm.sum(self.outgoing(), "cache"))

    def merged_cache(self) -> ContextCache:
        """A plain ``ContextCache`` holding the merged statistics (call after ``sync``)."""
        out = ContextCache(self.n_contexts, self.stats.sx.shape[1], self.stats.sz.shape[1], self.config, self.strata)
        out.stats = self.merged.scale(self.decay)
        out.noise_var = self.decay ** 2 * self.merged_noise
        out.releases = self.releases
        return out

    def load_merged(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)
        self.merged = self.stats
        self.merged_noise = self.noise_var
        self.pending = CacheStats.zeros(*self._shape())
        self.pending_noise = torch.zeros_like(self.noise_var)
        self.decay = 1.0
        self.pending_updates = 0

    def _shape(self) -> tuple[int, int, int]:
        return self.n_cells, self.stats.sx.shape[1], self.stats.sz.shape[1]

    def _refresh(self) -> None:
        view = self.merged.scale(self.decay)
        self.stats = view if self.private else view + self.pending
        self.noise_var = self.decay ** 2 * self.merged_noise + (0.0 if self.private else self.pending_noise)


def sync_metrics(metrics: dict[str, float], comm: Collectives) -> dict[str, float]:
    """Mean of each metric over workers (same keys on every worker)."""
    names = sorted(metrics)
    values = comm.mean(torch.tensor([metrics[k] for k in names], dtype=torch.float64), "metrics")
    return dict(zip(names, values.tolist()))
