"""One training step: a plain function of (config, state, batch, cache), no global state.

A local ``fit()``, a Ray Train worker, a Tune trial and a Flower client all call ``train_step``.
The step is three small updates and a cache update:

1. ``critic_step``: WGAN-GP critic on real rows vs rows generated from the cache's q_c(z);
2. ``utility_step``: the auxiliary target predictor on real rows;
3. ``generator_step``: encoder and decoder on λw·L_WGAN + λkl·(L_rec + β·L_KL) + λcov·L_cov +
   λu·L_utility, with the λ's rebalanced from gradient norms;
4. ``cache_update``: the batch's sufficient statistics, noised, folded into the EMA cache.

Privacy: the terms that read real rows are the critic's real part and gradient penalty, the
utility predictor's loss and the VAE term; each is computed per example so that
``privacy.per_sample`` can clip and noise it (DP-SGD) when ``state.dp`` is set. The adversarial,
covariance and utility terms of the generator read only generated rows, the DP critic and
predictor, and the noisy cache: post-processing, no extra cost. Balancing reads the norms of the
privatised gradients only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.cache import CacheStats, ContextCache
from cadasg_dist.memory import keep_freed_memory
from cadasg_dist.model.losses import (
    covariance_loss,
    critic_real_loss,
    kl_divergence,
    reconstruction_loss,
    utility_loss,
)
from cadasg_dist.model.networks import CADASGNetworks, ModelDims, activate
from cadasg_dist.train.balancing import REFERENCE, LossBalancer


@dataclass
class Batch:
    x: torch.Tensor  # (B, D) encoded real rows
    context: torch.Tensor  # (B,) context ids
    cell: torch.Tensor | None = None  # (B,) cache cell ids (context x target stratum), set by train_step


@dataclass
class TrainState:
    """Everything a step mutates: networks, optimizers, balancer, RNG, step counter."""

    nets: CADASGNetworks
    opt_generator: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    opt_utility: torch.optim.Optimizer
    balancer: LossBalancer
    generator: torch.Generator
    step: int = 0
    dp: Any = None  # a privacy.DPState when training is private
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def create(cls, dims: ModelDims, cfg: CADASGConfig, seed: int | None = None,
               device: torch.device | str | None = None) -> TrainState:
        """Fresh networks on ``device`` (default: ``cfg.train.device``) and their optimizers."""
        seed = cfg.train.seed if seed is None else seed
        keep_freed_memory()
        torch.manual_seed(seed)
        nets = CADASGNetworks(dims, cfg.model).to(resolve_device(cfg.train.device if device is None else device))
        t = cfg.train
        betas = (0.5, 0.9)
        gen_params = list(nets.encoder.parameters()) + list(nets.decoder.parameters())
        return cls(
            nets=nets,
            opt_generator=torch.optim.Adam(gen_params, lr=t.lr_generator, betas=betas, weight_decay=t.weight_decay),
            opt_critic=torch.optim.Adam(nets.critic.parameters(), lr=t.lr_critic, betas=betas,
                                        weight_decay=t.weight_decay),
            opt_utility=torch.optim.Adam(nets.utility.parameters(), lr=t.lr_critic, weight_decay=t.weight_decay),
            balancer=LossBalancer(cfg.loss),
            generator=torch.Generator().manual_seed(seed),  # on the CPU whatever the device: see config
        )

    @property
    def device(self) -> torch.device:
        return self.nets.device

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": self.nets.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "opt_critic": self.opt_critic.state_dict(),
            "opt_utility": self.opt_utility.state_dict(),
            "balancer": self.balancer.state_dict(),
            "rng": self.generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.opt_utility.load_state_dict(state["opt_utility"])
        self.balancer.load_state_dict(state["balancer"])
        self.generator.set_state(state["rng"])
        self.step = int(state["step"])


@dataclass(frozen=True)
class Priors:
    """Per-step snapshot of the cache: q(z) per cell as mean and Cholesky factor, Σ_c per context."""

    latent_mean: torch.Tensor  # (C·S, L)
    latent_chol: torch.Tensor  # (C·S, L, L)
    feature_cov: torch.Tensor  # (C, D, D)

    @classmethod
    def from_cache(cls, cache: ContextCache, latent_dim: int, device: torch.device | None = None) -> Priors:
        """The cache's priors (computed on the CPU in float64) as float32 tensors on ``device``."""
        if float(cache.stats.n.sum()) <= 0:  # empty cache: the VAE's N(0, I) prior
            k, c, d = cache.n_cells, cache.n_contexts, cache.stats.sx.shape[1]
            eye = torch.eye(latent_dim).expand(k, latent_dim, latent_dim)
            priors = (torch.zeros(k, latent_dim), eye.clone(), torch.zeros(c, d, d))
        else:
            mean, cov = cache.latent_prior()
            _, fcov = cache.feature_moments()
            priors = (mean.float(), torch.linalg.cholesky(cov).float(), fcov.float())
        return cls(*(t.to(device) for t in priors))

    def sample(self, cell: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # drawn by the CPU generator, then moved: the same numbers on any device
        eps = torch.randn(len(cell), self.latent_mean.shape[1], generator=generator).to(self.latent_mean.device)
        z = torch.empty_like(eps)
        # One matmul per cell: gathering a (B, L, L) factor per row costs B·L² memory traffic.
        for k in torch.unique(cell).tolist():
            rows = (cell == k).nonzero().squeeze(1)
            z[rows] = self.latent_mean[k] + eps[rows] @ self.latent_chol[k].T
        return z


def generate(nets: CADASGNetworks, priors: Priors, cell: torch.Tensor, onehot: torch.Tensor,
             generator: torch.Generator, tau: float | None) -> torch.Tensor:
    """Rows for the given cells (their contexts one-hot in ``onehot``), z drawn from q(z) per cell."""
    z = priors.sample(cell, generator)
    cond = nets.dims.condition(onehot, cell % nets.dims.strata)
    rows = activate(nets.decoder(z, cond), nets.dims.spans, tau=tau, generator=generator)  # (B, D)
    return pin_stratum(rows, cell, nets.dims)


def pin_stratum(rows: torch.Tensor, cell: torch.Tensor, dims: ModelDims) -> torch.Tensor:
    """Set the stratifying span of generated rows to their cell's class: class rates then follow
    the cache's (noisy) counts exactly, and the generator learns features that fit the class. In a
    cell of merged classes (``ModelDims.class_groups``) the decoder's own probabilities choose among
    the group's classes (renormalised; uniform where it gives them none)."""
    span = dims.strata_span
    if span is None:
        return rows
    return torch.cat([rows[:, :span.start], pinned_stratum(rows, cell, dims), rows[:, span.stop:]], dim=1)


def pinned_stratum(rows: torch.Tensor, cell: torch.Tensor, dims: ModelDims) -> torch.Tensor:
    """The (B, width) values ``pin_stratum`` gives the stratifying span (``dims.strata_span``, not None)."""
    span = dims.strata_span
    group = (cell % dims.strata) // dims.target_bins
    if dims.class_groups is None:
        return torch.nn.functional.one_hot(group, span.width).to(rows.dtype)  # (B, classes)
    member = dims.members(group).to(rows.dtype)
    own = rows[:, span.start:span.stop] * member
    total = own.sum(1, keepdim=True)
    return torch.where(total > 1e-12, own / total.clamp_min(1e-12), member / member.sum(1, keepdim=True))


def critic_step(cfg: CADASGConfig, state: TrainState, batch: Batch, onehot: torch.Tensor, priors: Priors) -> float:
    nets, g = state.nets, state.generator
    with torch.no_grad():
        fake = generate(nets, priors, batch.cell, onehot, g, cfg.model.gumbel_tau)
    alpha = torch.rand(len(batch.x), generator=g).to(batch.x.device)
    state.opt_critic.zero_grad(set_to_none=True)
    fake_term = nets.critic(fake, onehot).mean()  # reads no real row
    real_terms = critic_real_loss(nets.critic, batch.x, fake, onehot, alpha, cfg.loss.gradient_penalty)  # (B,)
    if state.dp is None:
        loss = fake_term + real_terms.mean()
        loss.backward()
    else:  # the fake term joins each example's clipped loss: its fake row is drawn for that example's cell
        state.dp.privatize_critic(nets, batch, fake, onehot, alpha, cfg)
    state.opt_critic.step()
    return float(fake_term.detach() + real_terms.detach().mean())


def utility_step(cfg: CADASGConfig, state: TrainState, batch: Batch, onehot: torch.Tensor) -> float:
    nets = state.nets
    if not nets.dims.target_spans:
        return 0.0
    state.opt_utility.zero_grad(set_to_none=True)
    losses = utility_loss(nets.utility(batch.x, onehot), batch.x, nets.dims.target_spans)  # (B,)
    if state.dp is None:
        losses.mean().backward()
    else:
        state.dp.privatize_utility(nets, batch, onehot, cfg)
    state.opt_utility.step()
    return float(losses.detach().mean())


def vae_terms(nets: CADASGNetworks, x: torch.Tensor, onehot: torch.Tensor, eps: torch.Tensor, beta: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example L_rec + β·L_KL (B,), with the encoder's mean and log-variance."""
    mean, logvar = nets.encoder(x, onehot)
    z = mean + eps * (0.5 * logvar).exp()
    raw = nets.decoder(z, nets.dims.condition(onehot, nets.dims.stratum(x)))
    return reconstruction_loss(raw, x, nets.dims.spans) + beta * kl_divergence(mean, logvar), mean, logvar


def _grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    if not loss.requires_grad:
        return 0.0
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    zero = torch.zeros((), device=params[0].device)
    return float(torch.sqrt(sum((gr.pow(2).sum() for gr in grads if gr is not None), zero)))


def public_terms(nets: CADASGNetworks, priors: Priors, cell: torch.Tensor, onehot: torch.Tensor,
                 generator: torch.Generator, cfg: CADASGConfig) -> dict[str, torch.Tensor]:
    """The generator's terms on rows generated for ``cell``: adversarial, covariance and utility.

    They read real rows only through the cells they are given (the DP path passes cells drawn
    from the noisy cache, the local path the batch's cells).
    """
    fake = generate(nets, priors, cell, onehot, generator, cfg.model.gumbel_tau)
    spans = nets.dims.target_spans
    return {
        "wgan": -nets.critic(fake, onehot).mean(),
        "cov": covariance_loss(priors.feature_cov, fake, onehot),
        # The generated target is a fixed label here: with gradients through it, the cheapest way to
        # make it predictable is to collapse it onto the majority class (measured: a rare class
        # fell from 8.5% to 0.6% of rows). Detached, the generator moves the features instead.
        "utility": (utility_loss(nets.utility(fake, onehot), fake.detach(), spans).mean()
                    if spans else fake.new_zeros(())),
    }


def generator_step(cfg: CADASGConfig, state: TrainState, batch: Batch, onehot: torch.Tensor, priors: Priors
                   ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    nets, g = state.nets, state.generator
    state.opt_generator.zero_grad(set_to_none=True)
    eps = torch.randn(len(batch.x), cfg.model.latent_dim, generator=g).to(batch.x.device)
    vae, mean, logvar = vae_terms(nets, batch.x, onehot, eps, cfg.loss.kl_beta)
    shared = [nets.decoder.head.weight]  # the layer every term reaches: where the norms are compared
    if state.dp is None:
        public = public_terms(nets, priors, batch.cell, onehot, g, cfg)
        norms = {name: _grad_norm(loss, shared) for name, loss in public.items()}
        norms["kl"] = _grad_norm(vae.mean(), shared)
        weights = state.balancer.update(norms)
        total = weights["kl"] * vae.mean() + sum(weights[k] * public[k] for k in public)
        total.backward()
    else:
        # The batch's cells come from real rows: the public terms use cells drawn from the noisy
        # cache instead (post-processing).
        public = state.dp.public_terms(nets, priors, cfg, g)
        norms = {name: _grad_norm(loss, shared) for name, loss in public.items()}
        norms["kl"] = state.dp.privatize_vae(nets, batch, onehot, eps, cfg, shared)
        weights = state.balancer.update(norms)
        state.dp.scale_private_grads(nets, weights["kl"])
        sum(weights[k] * public[k] for k in public).backward()
    state.opt_generator.step()
    metrics = {f"loss_{k}": float(v.detach()) for k, v in public.items()}
    metrics["loss_vae"] = float(vae.detach().mean())
    metrics.update({f"lambda_{k}": v for k, v in weights.items()})
    metrics.update({f"gradnorm_{k}": v for k, v in norms.items() if k != REFERENCE})
    return metrics, mean.detach(), logvar.detach()


def cache_update(cfg: CADASGConfig, cache: ContextCache, batch: Batch, mean: torch.Tensor, logvar: torch.Tensor,
                 generator: torch.Generator, share: float = 1.0) -> None:
    # the cache lives on the CPU (float64 sums): .cpu() is a no-op for CPU tensors
    stats = CacheStats.from_batch(batch.x.cpu(), mean.cpu(), logvar.exp().cpu(), batch.cell.cpu(), cache.n_cells,
                                  cfg.cache.clip_x, cfg.cache.clip_z)
    cache.update(stats, generator, share=share)


def resolve_device(name: torch.device | str) -> torch.device:
    """``"auto"``: the GPU when torch sees one, else the CPU; any other name as torch reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: Batch, device: torch.device) -> None:
    """Move the batch's tensors (rows, contexts, privacy units) to ``device`` in place."""
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor) and value.device != device:
            setattr(batch, name, value.to(device))


def train_step(cfg: CADASGConfig, state: TrainState, batch: Batch, cache: ContextCache) -> dict[str, float]:
    """One full step; returns the step's metrics (losses, λ's, gradient norms)."""
    nets = state.nets
    nets.train()
    to_device(batch, state.device)
    onehot = nets.one_hot(batch.context)
    batch.cell = nets.dims.cells(batch.x, batch.context)
    priors = Priors.from_cache(cache, cfg.model.latent_dim, state.device)
    critic = [critic_step(cfg, state, batch, onehot, priors) for _ in range(cfg.train.critic_steps)]
    util = utility_step(cfg, state, batch, onehot)
    metrics, mean, logvar = generator_step(cfg, state, batch, onehot, priors)
    cache_update(cfg, cache, batch, mean, logvar, state.generator)
    if state.dp is not None:
        state.dp.account_step(cache)
        metrics.update(state.dp.step_metrics())
    state.step += 1
    metrics.update(loss_critic=critic[-1], loss_predictor=util)
    return metrics
