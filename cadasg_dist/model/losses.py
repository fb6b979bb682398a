"""The terms of the composite loss, as pure functions.

L = λw·L_WGAN-GP + λkl·(L_rec + β·L_KL) + λcov·‖Σ_c(X) − Σ_c(X̂)‖_F + λu·L_utility

Every function returns a per-example vector when it reads real rows (``reduction="none"``), so
the DP path can clip each example's gradient; the non-private path takes the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cadasg_dist.data.transforms import SpanInfo


def reconstruction_loss(raw: torch.Tensor, x: torch.Tensor, spans: tuple[SpanInfo, ...]) -> torch.Tensor:
    """Per-example reconstruction: squared error on continuous spans, cross-entropy on softmax
    spans (targets are one-hot rows of ``x``). Returns (B,)."""
    total = torch.zeros(raw.shape[0], dtype=raw.dtype, device=raw.device)
    for s in spans:
        pred, true = raw[:, s.start:s.stop], x[:, s.start:s.stop]
        if s.kind == "continuous":
            total = total + (pred - true).pow(2).sum(dim=1)
        else:
            total = total - (true * F.log_softmax(pred, dim=1)).sum(dim=1)
    return total


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x,c) ‖ N(0, I)) per example. Returns (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, context: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty (‖∇_x̃ D(x̃, c)‖₂ − 1)² at x̃ = α·real + (1−α)·fake, per example. Returns (B,).

    Needs a double backward; Opacus's hooks cannot do that (opacus issue #31), which is why the DP
    path computes per-sample gradients with ``torch.func`` (``cadasg_dist.privacy.per_sample``).
    """
    interp = (alpha[:, None] * real + (1 - alpha[:, None]) * fake).requires_grad_(True)
    score = critic(interp, context)
    (grad,) = torch.autograd.grad(score.sum(), interp, create_graph=True)
    return (grad.norm(2, dim=1) - 1.0).pow(2)


def critic_real_loss(critic, real: torch.Tensor, fake: torch.Tensor, context: torch.Tensor, alpha: torch.Tensor,
                     gp_weight: float) -> torch.Tensor:
    """The part of the critic loss that reads real rows: −D(x) + λ_gp·GP, per example (B,)."""
    return -critic(real, context) + gp_weight * gradient_penalty(critic, real, fake, context, alpha)


def covariance_loss(target_cov: torch.Tensor, fake: torch.Tensor, context_onehot: torch.Tensor,
                    min_rows: int = 2) -> torch.Tensor:
    """Mean over the contexts in the batch of ‖Σ_c − Σ_c(X̂)‖_F.

    ``target_cov`` (C, D, D) is the cache's (noisy, PSD) Σ_c; ``fake`` (B, D) generated rows;
    ``context_onehot`` (B, C). Contexts with fewer than ``min_rows`` generated rows are skipped.
    """
    n = context_onehot.sum(dim=0)  # (C,)
    present = n >= min_rows
    if not bool(present.any()):
        return fake.new_zeros(())
    m = context_onehot[:, present]  # (B, K)
    nk = n[present]  # (K,)
    mean = (m.T @ fake) / nk[:, None]  # (K, D)
    second = torch.einsum("bk,bi,bj->kij", m, fake, fake) / nk[:, None, None]  # (K, D, D)
    cov = second - mean[:, :, None] * mean[:, None, :]
    diff = cov - target_cov[present].to(fake.dtype)
    return diff.flatten(1).norm(dim=1).mean()


def utility_loss(prediction: torch.Tensor, rows: torch.Tensor, target_spans: tuple[SpanInfo, ...]) -> torch.Tensor:
    """Loss of the utility predictor's ``prediction`` (B, T) against the target spans of ``rows``.

    On real rows it trains the predictor; on generated rows it makes the generator keep the
    target's relationship to the features. Soft labels for softmax spans; squared error for a
    continuous target, weighted by the row's probability of the target being present. Returns (B,).
    """
    total = torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
    offset = 0
    present = torch.ones_like(total)
    for s in target_spans:
        if s.role == "missing":
            present = rows[:, s.start]
    for s in target_spans:
        pred = prediction[:, offset:offset + s.width]
        true = rows[:, s.start:s.stop]
        offset += s.width
        if s.kind == "continuous":
            total = total + present * (pred - true).pow(2).sum(dim=1)
        else:
            total = total - (true * F.log_softmax(pred, dim=1)).sum(dim=1)
    return total
