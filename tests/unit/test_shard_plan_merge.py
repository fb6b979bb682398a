"""Sharded caches: merging the workers' noised updates gives the single-worker cache of the same data,
with exactly the calibrated noise. No Ray: the all-reduce is a sum of the workers' outgoing tensors."""

from __future__ import annotations

import dataclasses

import torch

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context import CacheStats, ContextCache
from cadasg_dist.distributed.sync import Collectives, ShardCache


def _cache_config(**values) -> CacheConfig:
    """A cache config outside a run: the non-private profile's values (``CADASGConfig.resolved``)
    with ``values`` set."""
    return dataclasses.replace(CADASGConfig().resolved().cache, **values)


C, D, L = 4, 5, 3


def _batch(seed: int, contexts: list[int], n: int = 64) -> CacheStats:
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(contexts)[torch.randint(0, len(contexts), (n,), generator=g)]
    return CacheStats.from_batch(torch.randn(n, D, generator=g), torch.randn(n, L, generator=g),
                                 torch.rand(n, L, generator=g), c, C, clip_x=100.0, clip_z=100.0)


def _merge(workers: list[ShardCache]) -> None:
    total = sum(w.outgoing() for w in workers)
    for w in workers:
        w.absorb(total.clone())


def _assert_same(a: CacheStats, b: CacheStats, atol: float = 1e-9) -> None:
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=0, atol=atol)


def test_merged_cache_equals_the_single_worker_cache_without_noise():
    # Prepare: worker 0 owns contexts {0, 1}, worker 1 owns {2, 3}; one cache sees both per step.
    cfg = _cache_config(ema_alpha=0.95)
    single = ContextCache(C, D, L, cfg)
    workers = [ShardCache(C, D, L, cfg, world_size=2) for _ in range(2)]
    # Execute: 7 steps, merging every 3 (and at the end), as the worker loop does.
    for step in range(1, 8):
        mine = [_batch(10 * step, [0, 1]), _batch(10 * step + 1, [2, 3])]
        single.update(mine[0] + mine[1])
        for w, b in zip(workers, mine):
            w.update(b)
        if step % 3 == 0:
            _merge(workers)
    _merge(workers)
    # Assert: identical statistics on both workers and in the single cache, and equal priors.
    for w in workers:
        _assert_same(single.stats, w.merged_cache().stats)
        assert w.releases == single.releases
    torch.testing.assert_close(workers[0].merged_cache().latent_prior()[1], single.latent_prior()[1])


def test_training_view_between_merges_holds_own_updates_only_when_not_private():
    cfg = _cache_config(ema_alpha=0.9)
    open_, private = ShardCache(C, D, L, cfg, world_size=2), ShardCache(C, D, L, cfg, world_size=2, private=True)
    for w in (open_, private):
        w.update(_batch(0, [0, 1]))
    assert float(open_.stats.n.sum()) == 64  # fresh statistics of its own contexts
    assert float(private.stats.n.sum()) == 0  # only what a merge released
    _merge([open_])
    _merge([private])
    assert float(private.stats.n.sum()) == 64


def test_one_worker_shard_cache_is_the_engine_cache():
    cfg = _cache_config(ema_alpha=0.95, sigma_mean=0.5, sigma_cov=0.5, sigma_latent=0.5)
    plain, shard = ContextCache(C, D, L, cfg), ShardCache(C, D, L, cfg, world_size=1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(5):
        b = _batch(step, [0, 1, 2, 3])
        plain.update(b, g1)
        shard.update(b, g2)
        torch.testing.assert_close(shard.stats.sxx, plain.stats.sxx, rtol=0, atol=1e-9)


def test_each_worker_adds_a_share_and_the_merge_carries_the_calibrated_noise():
    # Prepare: the Gaussian mechanism on n has std sigma_mean; 2 workers, 1000 independent merges.
    sigma, trials = 2.0, 1000
    cfg = _cache_config(ema_alpha=1.0, sigma_mean=sigma, sigma_cov=sigma, sigma_latent=sigma)
    mine = [_batch(0, [0, 1]), _batch(1, [2, 3])]
    exact = mine[0] + mine[1]
    g = [torch.Generator().manual_seed(100), torch.Generator().manual_seed(200)]
    merged_noise, share_noise = [], []
    for _ in range(trials):
        workers = [ShardCache(C, D, L, cfg, world_size=2) for _ in range(2)]
        for w, b, gen in zip(workers, mine, g):
            w.update(b, gen)
        share_noise.append(workers[0].pending.n - mine[0].n)
        _merge(workers)
        merged_noise.append(workers[0].merged.n - exact.n)
    merged_var = torch.stack(merged_noise).var(0)  # (C,)
    share_var = torch.stack(share_noise).var(0)
    # Assert: per worker sigma^2 / 2, merged sigma^2 (1000 draws: a variance estimate has a 4.5% sd;
    # 20% is over 4 sd).
    torch.testing.assert_close(share_var, torch.full((C,), sigma**2 / 2, dtype=torch.float64), rtol=0.2, atol=0)
    torch.testing.assert_close(merged_var, torch.full((C,), sigma**2, dtype=torch.float64), rtol=0.2, atol=0)
    # ... and the merged cache knows that noise (what its shrinkage reads), as one engine cache would
    single = ContextCache(C, D, L, cfg)
    single.update(exact)
    torch.testing.assert_close(workers[0].merged_cache().noise_var, single.noise_var, rtol=1e-12, atol=0)
    assert float(workers[0].merged_cache().noise_var[0]) == sigma**2


def test_noise_variance_follows_the_decays_between_merges():
    cfg = _cache_config(ema_alpha=0.9, sigma_mean=1.0, sigma_cov=1.0, sigma_latent=1.0)
    single = ContextCache(C, D, L, cfg)
    workers = [ShardCache(C, D, L, cfg, world_size=2, private=True) for _ in range(2)]
    for step in range(1, 6):
        single.update(_batch(step, [0, 1, 2, 3]))
        for w in workers:
            w.update(_batch(step, [0, 1]))
        if step % 2 == 0:
            _merge(workers)
    _merge(workers)
    torch.testing.assert_close(workers[1].merged_cache().noise_var, single.noise_var, rtol=1e-12, atol=0)
    torch.testing.assert_close(workers[1].noise_var, single.noise_var, rtol=1e-12, atol=0)


def test_collectives_count_payload_bytes_with_one_worker():
    comm = Collectives(1)
    t = torch.ones(10, dtype=torch.float64)
    comm.mean(t, "cache")
    assert comm.bytes_sent["cache"] == 80 and comm.calls["cache"] == 1 and float(t.sum()) == 10
