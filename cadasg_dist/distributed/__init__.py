"""Distributed training on Ray Train: context-sharded workers, synchronised gradients, noisy cache
merges and checkpoints that survive worker failures. ``fit_distributed`` is the entry point."""

from cadasg_dist.distributed.plan import ShardPlan, make_plan

__all__ = ["ShardPlan", "fit_distributed", "make_plan"]


def fit_distributed(*args, **kwargs):  # noqa: ANN002, ANN003 - imported lazily: Ray is heavy
    from cadasg_dist.distributed.trainer import fit_distributed as fit

    return fit(*args, **kwargs)
