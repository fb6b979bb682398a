"""The context cache: per context c, a count, mean μ_c and covariance Σ_c of the encoded features,
and a latent prior q_c(z), all kept as *sufficient statistics*.

Sufficient statistics (n, Σx, Σxxᵀ, Σz, Σzzᵀ, Σvar(z)) add up, so merging caches from workers or
silos is exact: ``merge(stats(A), stats(B)) == stats(A ∪ B)``. The EMA keeps *decayed sums*
(S ← α·S + s_batch), which are still additive when every party decays in step, so EMA and exact
merges coexist. Means and covariances are derived on read, with a shrinkage toward the pooled
estimate (post-processing, free under DP) and a projection to positive semi-definite.

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

# Pseudo-count of the pooled estimate mixed into every context's mean and covariance (shrinkage).
SHRINKAGE = 5.0


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

        cx, cz = config.clip_x, config.clip_z
        return CacheStats(
            n=gauss(self.n, config.sigma_mean),
            sx=gauss(self.sx, config.sigma_mean * cx),
            sxx=gauss(self.sxx, config.sigma_cov * cx * cx, symmetric=True),
            sz=gauss(self.sz, config.sigma_latent * cz),
            szz=gauss(self.szz, config.sigma_latent * cz * cz, symmetric=True),
            svar=gauss(self.svar, config.sigma_latent * cz),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> CacheStats:
        return cls(**{f.name: state[f.name].double() for f in fields(cls)})


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
        self.releases += 1

    def reset(self) -> None:
        s = self.stats
        self.stats = CacheStats.zeros(s.n.shape[0], s.sx.shape[1], s.sz.shape[1])

    def merge(self, other: ContextCache) -> ContextCache:
        out = ContextCache(self.n_contexts, self.stats.sx.shape[1], self.stats.sz.shape[1], self.config,
                           self.strata)
        out.stats = self.stats + other.stats
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
        """μ_c (C, D) and Σ_c (C, D, D) of the encoded features, per context."""
        st = self._per_context() if self.strata > 1 else self.stats
        return _moments(st.n, st.sx, st.sxx, self.config.jitter)

    def latent_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (C·S, L) and covariance (C·S, L, L) of q(z) per cell: the Gaussian over encoder
        means, widened by the average encoder variance so samples match what the decoder saw."""
        n = self.stats.n.clamp_min(0.0)
        total = n.sum().clamp_min(1.0)
        pooled_var = (self.stats.svar.sum(0) / total).clamp_min(0.0)
        mean_var = ((self.stats.svar + SHRINKAGE * pooled_var) / (n[:, None] + SHRINKAGE)).clamp_min(0.0)
        return _moments(self.stats.n, self.stats.sz, self.stats.szz, self.config.jitter, extra_var=mean_var)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self.stats.state_dict()
        state["releases"] = torch.tensor(self.releases)
        state["strata"] = torch.tensor(self.strata)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = CacheStats.from_state_dict(state)
        self.releases = int(state.get("releases", torch.tensor(0)))
        self.strata = int(state.get("strata", torch.tensor(1)))


def _moments(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, jitter: float,
             extra_var: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row means (K, F) and PSD covariances (K, F, F) from sums, shrunk toward the pooled ones
    with a pseudo-count of SHRINKAGE rows (post-processing: it steadies small, noisy cells)."""
    n = n.clamp_min(0.0)
    total = n.sum().clamp_min(1.0)
    pooled_mean = s1.sum(0) / total
    pooled_second = s2.sum(0) / total
    w = n[:, None]
    mean = (s1 + SHRINKAGE * pooled_mean) / (w + SHRINKAGE)
    second = (s2 + SHRINKAGE * pooled_second) / (w[:, :, None] + SHRINKAGE)
    cov = second - mean[:, :, None] * mean[:, None, :]
    if extra_var is not None:
        cov = cov + torch.diag_embed(extra_var)
    return mean, project_psd(cov, jitter)


def project_psd(cov: torch.Tensor, floor: float) -> torch.Tensor:
    """Nearest symmetric matrix with eigenvalues >= ``floor`` (batched over leading dims)."""
    sym = 0.5 * (cov + cov.transpose(-1, -2))
    vals, vecs = torch.linalg.eigh(sym)
    return (vecs * vals.clamp_min(floor)[..., None, :]) @ vecs.transpose(-1, -2)
