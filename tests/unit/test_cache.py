import torch

from cadasg_dist.config import CacheConfig
from cadasg_dist.context import CacheStats, ContextCache, project_psd


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
    cfg = CacheConfig(ema_alpha=1.0)
    a, b, ab = (ContextCache(4, 5, 3, cfg) for _ in range(3))
    a.update(_stats(x[:cut], zm[:cut], zv[:cut], c[:cut]))
    b.update(_stats(x[cut:], zm[cut:], zv[cut:], c[cut:]))
    ab.update(whole)
    torch.testing.assert_close(a.merge(b).feature_moments()[1], ab.feature_moments()[1])


def test_moments_match_numpy_per_context():
    x, zm, zv, c = _data(n=2000)
    cache = ContextCache(4, 5, 3, CacheConfig(ema_alpha=1.0))
    cache.update(_stats(x, zm, zv, c))
    mean, cov = cache.feature_moments()
    for k in range(4):
        rows = x[c == k].double()
        # shrinkage toward the pooled estimate is weak at ~500 rows per context
        torch.testing.assert_close(mean[k], rows.mean(0), atol=0.02, rtol=0)
        torch.testing.assert_close(cov[k], torch.cov(rows.T, correction=0), atol=0.05, rtol=0)


def test_ema_decays_old_batches():
    x, zm, zv, c = _data()
    cache = ContextCache(4, 5, 3, CacheConfig(ema_alpha=0.9))
    cache.update(_stats(x, zm, zv, c))
    first = cache.stats.n.clone()
    cache.update(_stats(x, zm, zv, c))
    torch.testing.assert_close(cache.stats.n, first * 1.9)
    assert cache.releases == 2


def test_noise_hook_adds_noise_only_when_asked():
    x, zm, zv, c = _data()
    s = _stats(x, zm, zv, c)
    quiet = s.noised(CacheConfig())
    torch.testing.assert_close(quiet.sxx, s.sxx)
    noisy_cfg = CacheConfig(sigma_mean=1.0, sigma_cov=1.0, sigma_latent=1.0, clip_x=2.0, clip_z=2.0)
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
    cfg = CacheConfig(sigma_cov=50.0, clip_x=1.0, ema_alpha=1.0)
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
