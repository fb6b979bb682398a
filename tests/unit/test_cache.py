import dataclasses

import torch

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context import CacheStats, ContextCache, project_psd
from cadasg_dist.context.cache import block_noise_std


def _cache_config(**values) -> CacheConfig:
    """A cache config outside a run: the non-private profile's values (``CADASGConfig.resolved``)
    with ``values`` set."""
    return dataclasses.replace(CADASGConfig().resolved().cache, **values)


def _data(n=300, d=5, latent=3, contexts=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    zm = torch.randn(n, latent, generator=g)
    zv = torch.rand(n, latent, generator=g)
    c = torch.randint(0, contexts, (n,), generator=g)
    return x, zm, zv, c


def _stats(x, zm, zv, c, contexts=4):
    return CacheStats.from_batch(x, zm, zv, c, contexts, clip_x=100.0, clip_z=100.0)


def test_merge_is_exact():
    x, zm, zv, c = _data()
    cut = 137
    whole = _stats(x, zm, zv, c)
    merged = _stats(x[:cut], zm[:cut], zv[:cut], c[:cut]) + _stats(x[cut:], zm[cut:], zv[cut:], c[cut:])
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], value, rtol=0, atol=1e-9)
    cfg = _cache_config(ema_alpha=1.0)
    a, b, ab = (ContextCache(4, 5, 3, cfg) for _ in range(3))
    a.update(_stats(x[:cut], zm[:cut], zv[:cut], c[:cut]))
    b.update(_stats(x[cut:], zm[cut:], zv[cut:], c[cut:]))
    ab.update(whole)
    torch.testing.assert_close(a.merge(b).feature_moments()[1], ab.feature_moments()[1])


def test_moments_match_numpy_per_context():
    x, zm, zv, c = _data(n=2000)
    cache = ContextCache(4, 5, 3, _cache_config(ema_alpha=1.0))
    cache.update(_stats(x, zm, zv, c))
    mean, cov = cache.feature_moments()
    for k in range(4):
        rows = x[c == k].double()
        # shrinkage toward the pooled estimate is weak at ~500 rows per context
        torch.testing.assert_close(mean[k], rows.mean(0), atol=0.02, rtol=0)
        torch.testing.assert_close(cov[k], torch.cov(rows.T, correction=0), atol=0.05, rtol=0)


def test_ema_decays_old_batches():
    x, zm, zv, c = _data()
    cache = ContextCache(4, 5, 3, _cache_config(ema_alpha=0.9))
    cache.update(_stats(x, zm, zv, c))
    first = cache.stats.n.clone()
    cache.update(_stats(x, zm, zv, c))
    torch.testing.assert_close(cache.stats.n, first * 1.9)
    assert cache.releases == 2


def test_noise_hook_adds_noise_only_when_asked():
    x, zm, zv, c = _data()
    s = _stats(x, zm, zv, c)
    quiet = s.noised(_cache_config())
    torch.testing.assert_close(quiet.sxx, s.sxx)
    noisy_cfg = _cache_config(sigma_mean=1.0, sigma_cov=1.0, sigma_latent=1.0, clip_x=2.0, clip_z=2.0)
    g = torch.Generator().manual_seed(0)
    a, b = s.noised(noisy_cfg, g), s.noised(noisy_cfg, g)
    assert not torch.equal(a.sx, b.sx)
    torch.testing.assert_close(a.sxx, a.sxx.transpose(-1, -2))  # releases stay symmetric
    diffs = torch.stack([s.noised(noisy_cfg, g).sx - s.sx for _ in range(200)])
    assert abs(float(diffs.std()) - 2.0) < 0.1  # sigma_mean * clip_x


def test_noisy_covariance_is_projected_to_psd():
    bad = torch.tensor([[[1.0, 2.0], [2.0, 1.0]]], dtype=torch.float64)  # eigenvalues 3 and -1
    fixed = project_psd(bad, 1e-6)
    assert float(torch.linalg.eigvalsh(fixed).min()) >= 1e-6 - 1e-12
    cfg = _cache_config(sigma_cov=50.0, clip_x=1.0, ema_alpha=1.0)
    x, zm, zv, c = _data(n=40)
    cache = ContextCache(4, 5, 3, cfg)
    cache.update(_stats(x, zm, zv, c), torch.Generator().manual_seed(1))
    _, cov = cache.feature_moments()
    assert float(torch.linalg.eigvalsh(cov).min()) > 0


def test_row_contribution_is_clipped():
    x = torch.full((1, 4), 10.0)
    s = CacheStats.from_batch(x, x[:, :2], x[:, :2].abs(), torch.tensor([0]), 1, clip_x=1.0, clip_z=1.0)
    assert abs(float(s.sx.norm()) - 1.0) < 1e-9
    assert abs(float(s.sxx.norm()) - 1.0) < 1e-9


def test_noise_variance_is_tracked_through_updates_merges_and_artifacts():
    cfg = _cache_config(ema_alpha=0.5, sigma_mean=1.0, sigma_cov=2.0, sigma_latent=3.0, clip_x=2.0, clip_z=4.0)
    std = block_noise_std(cfg)  # n, sx, sxx, sz, szz, svar
    torch.testing.assert_close(std, torch.tensor([1.0, 2.0, 8.0, 12.0, 48.0, 12.0], dtype=torch.float64))
    x, zm, zv, c = _data()
    cache = ContextCache(4, 5, 3, cfg)
    g = torch.Generator().manual_seed(0)
    cache.update(_stats(x, zm, zv, c), g)
    cache.update(_stats(x, zm, zv, c), g, share=0.5)
    torch.testing.assert_close(cache.noise_var, std ** 2 * (0.25 + 0.5))  # decayed by alpha², plus a share
    torch.testing.assert_close(cache.merge(cache).noise_var, 2 * cache.noise_var)  # independent noises add
    restored = ContextCache(4, 5, 3, _cache_config())
    restored.load_state_dict(cache.state_dict())
    torch.testing.assert_close(restored.noise_var, cache.noise_var)
    old = {k: v for k, v in cache.state_dict().items() if k != "noise_var"}  # an artifact from before
    restored.load_state_dict(old)
    assert float(restored.noise_var.abs().sum()) == 0
    cache.reset()
    assert float(cache.noise_var.abs().sum()) == 0


def _rare_cell_release(seed: int, sigma: float) -> tuple[ContextCache, torch.Tensor]:
    """4 contexts x 2 strata; stratum 1's latent mean is (2, 0, 0); cell (context 3, stratum 1) has
    6 rows, every other cell 400. One release with latent noise sigma * clip per entry."""
    g = torch.Generator().manual_seed(seed)
    sizes = [400] * 7 + [6]
    cells = torch.repeat_interleave(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]), torch.tensor(sizes))
    shift = torch.tensor([2.0, 0.0, 0.0])
    zm = 0.5 * torch.randn(len(cells), 3, generator=g) + (cells % 2 == 1)[:, None] * shift
    x = torch.randn(len(cells), 5, generator=g)
    stats = CacheStats.from_batch(x, zm, torch.full_like(zm, 0.1), cells, 8, clip_x=5.0, clip_z=5.0)
    cache = ContextCache(4, 5, 3, _cache_config(ema_alpha=1.0, sigma_mean=sigma, sigma_cov=sigma, sigma_latent=sigma,
                                              clip_x=5.0, clip_z=5.0), strata=2)
    cache.update(stats, g)
    return cache, shift


def test_a_rare_cell_under_noise_takes_its_stratum_instead_of_the_noise():
    # Prepare: 30 releases at a noise that swamps a 6-row cell's sums (sd 10 per latent sum entry).
    errors = {"aware": [], "blind": []}
    for seed in range(30):
        cache, shift = _rare_cell_release(seed, 2.0)
        mean, cov = cache.latent_prior()
        errors["aware"].append(float((mean[7] - shift).norm()))
        # Execute: the same release read as if it were exact (the estimator before noise tracking)
        cache.noise_var = torch.zeros_like(cache.noise_var)
        errors["blind"].append(float((cache.latent_prior()[0][7] - shift).norm()))
        assert float(torch.linalg.eigvalsh(cov).min()) > 0
    aware, blind = torch.tensor(errors["aware"]), torch.tensor(errors["blind"])
    # Assert: knowing the noise, the rare cell sits near its stratum's mean (it keeps the class
    # signal: (2, 0, 0), not the pooled (1, 0, 0)); read blind, its mean is mostly noise.
    assert float(aware.mean()) < 0.5 < float(blind.mean())
    assert float(aware.pow(2).mean()) < 0.1 * float(blind.pow(2).mean())


def test_populated_cells_keep_their_own_moments_under_noise():
    cache, shift = _rare_cell_release(0, 0.05)
    mean, _ = cache.latent_prior()
    exact, _ = _rare_cell_release(0, 0.0)[0].latent_prior()
    torch.testing.assert_close(mean[:7], exact[:7], atol=0.02, rtol=0)
    torch.testing.assert_close(mean[1], shift.double(), atol=0.1, rtol=0)
