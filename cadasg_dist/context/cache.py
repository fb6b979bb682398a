"""The context cache: per context c, a count, mean μ_c and covariance Σ_c of the encoded features,
and a latent prior q_c(z), all kept as *sufficient statistics*.

Sufficient statistics (n, Σx, Σxxᵀ, Σz, Σzzᵀ, Σvar(z)) add up, so merging caches from workers or
silos is exact: ``merge(stats(A), stats(B)) == stats(A ∪ B)``. The EMA keeps *decayed sums*
(S ← α·S + s_batch), which are still additive when every party decays in step, so EMA and exact
merges coexist. Means and covariances are derived on read, shrunk toward a parent estimate
(post-processing, free under DP) and projected to positive semi-definite.

The shrinkage knows the noise. The cache tracks the variance of the Gaussian noise in each block
of its sums (``ContextCache.noise_var``: public, a function of the σ's, the clipping norms and the
EMA decays), and a cell's pseudo-count toward its parent grows with the noise over its count:
k = SHRINKAGE·(1 + v / (w·n)), with v the noise variance of a sum, w the pooled per-row variance
and n the cell's (noisy) count. A cell with thousands of rows keeps its own moments; a cell with
a handful of rows under DP noise takes its parent's instead of a mean that is mostly noise
(measured on rwm5yr at epsilon = 8: rare cells' latent means had norms up to 34, where the
populated cells sit near 2, and decoded into caricature rows). The latent prior is shrunk in two
levels: a cell toward its stratum (the target class, pooled over contexts), the stratum toward
all rows, so a rare cell keeps what its class shares with the others in its class.

Privacy: every statistic here is computed from real rows. Each row's contribution is bounded by
clipping its encoded features to ``clip_x`` and its encoder mean and variance to ``clip_z`` (L2),
and ``CacheStats.noised`` is the Gaussian mechanism on the sums, with the noise multipliers of
``CacheConfig`` (σ_μ for n and Σx, σ_Σ for Σxxᵀ, σ_z for the latent sums). With all σ = 0 the
cache is *not* private; the privacy layer calibrates the σ's and charges each release.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from cadasg_dist.config import CacheConfig

# Pseudo-count of the parent estimate mixed into every cell's mean and covariance when the sums are
# exact (shrinkage); noise raises it (``shrunk_moments``).
SHRINKAGE = 5.0
BLOCKS = ("n", "sx", "sxx", "sz", "szz", "svar")  # the order of ``noise_var`` and ``block_noise_std``


def clip_rows(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row to L2 norm at most ``max_norm`` (bounds one row's contribution)."""
    norms = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x * (max_norm / norms).clamp(max=1.0)


@dataclass
class CacheStats:
    """Additive sufficient statistics per context (C contexts, D features, L latent dims)."""

    n: torch.Tensor  # (C,)
    sx: torch.Tensor  # (C, D)
    sxx: torch.Tensor  # (C, D, D)
    sz: torch.Tensor  # (C, L)
    szz: torch.Tensor  # (C, L, L)
    svar: torch.Tensor  # (C, L) sum of encoder variances

    @classmethod
    def zeros(cls, n_contexts: int, dim: int, latent: int) -> CacheStats:
        z = dict(dtype=torch.float64)
        return cls(torch.zeros(n_contexts, **z), torch.zeros(n_contexts, dim, **z),
                   torch.zeros(n_contexts, dim, dim, **z), torch.zeros(n_contexts, latent, **z),
                   torch.zeros(n_contexts, latent, latent, **z), torch.zeros(n_contexts, latent, **z))

    @classmethod
    def from_batch(cls, x: torch.Tensor, z_mean: torch.Tensor, z_var: torch.Tensor, context: torch.Tensor,
                   n_contexts: int, clip_x: float, clip_z: float) -> CacheStats:
        """Statistics of one batch: x (B, D) features, z_mean/z_var (B, L), context (B,) ids."""
        x = clip_rows(x.detach().double(), clip_x)
        zm = clip_rows(z_mean.detach().double(), clip_z)
        zv = clip_rows(z_var.detach().double(), clip_z)
        s = cls.zeros(n_contexts, x.shape[1], zm.shape[1])
        s.n.index_add_(0, context, torch.ones_like(context, dtype=torch.float64))
        s.sx.index_add_(0, context, x)
        s.sxx.index_add_(0, context, x[:, :, None] * x[:, None, :])  # (B, D, D)
        s.sz.index_add_(0, context, zm)
        s.szz.index_add_(0, context, zm[:, :, None] * zm[:, None, :])  # (B, L, L)
        s.svar.index_add_(0, context, zv)
        return s

    def __add__(self, other: CacheStats) -> CacheStats:
        return CacheStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scale(self, factor: float) -> CacheStats:
        return CacheStats(*(getattr(self, f.name) * factor for f in fields(self)))

    def noised(self, config: CacheConfig, generator: torch.Generator | None = None, share: float = 1.0) -> CacheStats:
        """Gaussian mechanism on the sums; sensitivity is 1 for n, clip for first moments, clip² for
        second moments. ``share`` is the fraction of the noise *variance* this party adds (1/N when
        N workers or silos each add a share of one calibrated release)."""
        def gauss(t: torch.Tensor, std: float, symmetric: bool = False) -> torch.Tensor:
            if std == 0:
                return t
            noise = torch.randn(t.shape, generator=generator, dtype=t.dtype) * std * share ** 0.5
            if symmetric:  # noise the upper triangle once and mirror it: the release stays symmetric
                noise = torch.triu(noise) + torch.triu(noise, 1).transpose(-1, -2)
            return t + noise

        std = dict(zip(BLOCKS, block_noise_std(config).tolist()))
        return CacheStats(**{name: gauss(getattr(self, name), std[name], symmetric=name in ("sxx", "szz"))
                             for name in BLOCKS})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> CacheStats:
        return cls(**{f.name: state[f.name].double() for f in fields(cls)})


def block_noise_std(config: CacheConfig) -> torch.Tensor:
    """(6,) standard deviation of the noise ``CacheStats.noised`` adds to each entry of each block
    (in ``BLOCKS`` order): the block's noise multiplier times its sensitivity."""
    cx, cz = config.clip_x, config.clip_z
    return torch.tensor([config.sigma_mean, config.sigma_mean * cx, config.sigma_cov * cx * cx,
                         config.sigma_latent * cz, config.sigma_latent * cz * cz, config.sigma_latent * cz],
                        dtype=torch.float64)


def decayed_noise(noise_var: torch.Tensor, alpha: float, config: CacheConfig, share: float) -> torch.Tensor:
    """``noise_var`` after S ← α·S + noised(batch): the old noise decays by α², the release adds
    ``share`` of its variance."""
    return alpha * alpha * noise_var + share * block_noise_std(config) ** 2


class ContextCache:
    """EMA over noisy per-cell sufficient statistics, with derived μ_c, Σ_c and q_c(z).

    A *cell* is a context c and a stratum s of the target (its class, or whether a numeric target
    sits on its point mass): cell = c·S + s. The latent prior is kept per cell, so a rare target
    class inside a context keeps its own region of latent space instead of being blurred into one
    Gaussian; feature moments and context shares are sums over a context's cells (exact, since the
    statistics add). With S = 1 a cell is a context.
    """

    def __init__(self, n_contexts: int, dim: int, latent: int, config: CacheConfig, strata: int = 1) -> None:
        self.config = config
        self.strata = strata
        self.stats = CacheStats.zeros(n_contexts * strata, dim, latent)
        self.releases = 0  # how many noisy releases were folded in (the ledger counts them)
        # Variance of the noise in one entry of each block of ``stats`` (BLOCKS order); the same for
        # every cell. Public: it follows from the σ's, the clipping norms and the decays.
        self.noise_var = torch.zeros(len(BLOCKS), dtype=torch.float64)

    @property
    def n_contexts(self) -> int:
        return self.stats.n.shape[0] // self.strata

    @property
    def n_cells(self) -> int:
        return self.stats.n.shape[0]

    def update(self, batch: CacheStats, generator: torch.Generator | None = None, alpha: float | None = None,
               share: float = 1.0) -> None:
        """Fold one batch in: S ← α·S + noised(batch)."""
        a = self.config.ema_alpha if alpha is None else alpha
        self.stats = self.stats.scale(a) + batch.noised(self.config, generator, share)
        self.noise_var = decayed_noise(self.noise_var, a, self.config, share)
        self.releases += 1

    def reset(self) -> None:
        s = self.stats
        self.stats = CacheStats.zeros(s.n.shape[0], s.sx.shape[1], s.sz.shape[1])
        self.noise_var = torch.zeros(len(BLOCKS), dtype=torch.float64)

    def merge(self, other: ContextCache) -> ContextCache:
        out = ContextCache(self.n_contexts, self.stats.sx.shape[1], self.stats.sz.shape[1], self.config,
                           self.strata)
        out.stats = self.stats + other.stats
        out.noise_var = self.noise_var + other.noise_var  # independent noises add
        out.releases = max(self.releases, other.releases)
        return out

    # --- derived quantities (post-processing) -----------------------------------------------
    def cell_counts(self) -> torch.Tensor:
        """(C·S,) noisy counts per cell, floored at 0."""
        return self.stats.n.clamp_min(0.0)

    def counts(self) -> torch.Tensor:
        """(C,) noisy counts per context."""
        return self.cell_counts().view(self.n_contexts, self.strata).sum(1)

    def frequencies(self) -> torch.Tensor:
        n = self.counts()
        total = n.sum()
        return n / total if total > 0 else torch.full_like(n, 1.0 / len(n))

    def _per_context(self) -> CacheStats:
        c, s = self.n_contexts, self.strata
        return CacheStats(*(getattr(self.stats, f.name).reshape(c, s, *getattr(self.stats, f.name).shape[1:]).sum(1)
                            for f in fields(CacheStats)))

    def feature_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_c (C, D) and Σ_c (C, D, D) of the encoded features, per context, shrunk toward all rows."""
        st = self._per_context() if self.strata > 1 else self.stats
        v = self.noise_var * self.strata  # a context's sums add its S cells' noises
        mean, cov, _ = shrunk_moments(st.n, st.sx, st.sxx, v[1], v[2], *_pooled(st.n, st.sx, st.sxx))
        return mean, project_psd(cov, self.config.jitter)

    def latent_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (C·S, L) and covariance (C·S, L, L) of q(z) per cell: the Gaussian over encoder
        means, widened by the average encoder variance so samples match what the decoder saw.
        Each cell is shrunk toward its stratum pooled over contexts, each stratum toward all rows."""
        st, c, s = self.stats, self.n_contexts, self.strata
        v = self.noise_var
        grouped = [t.reshape(c, s, *t.shape[1:]).sum(0) for t in (st.n, st.sz, st.szz, st.svar)]
        top_mean, top_cov = _pooled(st.n, st.sz, st.szz)
        top_var = (st.svar.sum(0) / st.n.clamp_min(0.0).sum().clamp_min(1.0)).clamp_min(0.0)
        s_mean, s_cov, s_k = shrunk_moments(*grouped[:3], c * v[3], c * v[4], top_mean, top_cov)
        s_var = (grouped[3] + s_k[:, None] * top_var) / (grouped[0].clamp_min(0.0) + s_k)[:, None]
        stratum = torch.arange(c * s) % s
        mean, cov, k = shrunk_moments(st.n, st.sz, st.szz, v[3], v[4], s_mean[stratum], s_cov[stratum])
        mean_var = ((st.svar + k[:, None] * s_var[stratum]) / (st.n.clamp_min(0.0) + k)[:, None]).clamp_min(0.0)
        return mean, project_psd(cov + torch.diag_embed(mean_var), self.config.jitter)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self.stats.state_dict()
        state["releases"] = torch.tensor(self.releases)
        state["strata"] = torch.tensor(self.strata)
        state["noise_var"] = self.noise_var.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = CacheStats.from_state_dict(state)
        self.releases = int(state.get("releases", torch.tensor(0)))
        self.strata = int(state.get("strata", torch.tensor(1)))
        # an artifact from before the noise was tracked: shrunk as if exact
        self.noise_var = state.get("noise_var", torch.zeros(len(BLOCKS))).double().clone()


def _pooled(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of all rows together (the sums over every row of the table)."""
    total = n.clamp_min(0.0).sum().clamp_min(1.0)
    mean = s1.sum(0) / total
    return mean, s2.sum(0) / total - mean[:, None] * mean[None, :]


def shrunk_moments(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, v1: torch.Tensor | float,
                   v2: torch.Tensor | float, parent_mean: torch.Tensor, parent_cov: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row means (K, F) and covariances (K, F, F) from noisy sums (n, Σs, Σssᵀ) with noise
    variances v1 (first moments) and v2 (second moments) per entry, each shrunk toward its parent
    with a pseudo-count that grows with the noise: k = SHRINKAGE·(1 + v / (w·n)), w the parent's
    mean per-row variance (2w² for a second moment). Also returns the first moments' k (K,).
    Post-processing of the noisy sums; not projected to PSD."""
    n = n.clamp_min(0.0)
    w = float(torch.diagonal(parent_cov, dim1=-2, dim2=-1).mean().clamp_min(1e-6)) if parent_cov.numel() else 1.0
    tiny = n.clamp_min(1e-9)
    k1 = SHRINKAGE * (1.0 + torch.as_tensor(v1, dtype=n.dtype) / (w * tiny))
    k2 = SHRINKAGE * (1.0 + torch.as_tensor(v2, dtype=n.dtype) / (2.0 * w * w * tiny))
    parent_mean = parent_mean.expand_as(s1)
    mean = (s1 + k1[:, None] * parent_mean) / (n + k1)[:, None]
    # scatter around the shrunk mean: Σ(x - m)(x - m)ᵀ = Σxxᵀ - Σx mᵀ - m Σxᵀ + n m mᵀ
    outer = lambda a, b: a[:, :, None] * b[:, None, :]  # noqa: E731
    scatter = s2 - outer(s1, mean) - outer(mean, s1) + n[:, None, None] * outer(mean, mean)
    cov = (scatter + k2[:, None, None] * parent_cov.expand_as(s2)) / (n + k2)[:, None, None]
    return mean, cov, k1


def project_psd(cov: torch.Tensor, floor: float) -> torch.Tensor:
    """Nearest symmetric matrix with eigenvalues >= ``floor`` (batched over leading dims)."""
    sym = 0.5 * (cov + cov.transpose(-1, -2))
    vals, vecs = torch.linalg.eigh(sym)
    return (vecs * vals.clamp_min(floor)[..., None, :]) @ vecs.transpose(-1, -2)
