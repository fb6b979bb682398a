"""The hybrid GAN-VAE: encoder q(z|x,c), decoder/generator G(z,c), critic D(x,c), and the
auxiliary utility predictor U(x without target, c).

No BatchNorm anywhere: per-sample gradients for DP-SGD need a normalisation that does not mix
examples, so every block is Linear -> LayerNorm -> LeakyReLU. The context enters every network as
a one-hot vector (a learned embedding, as a Linear layer sees it).

The decoder also reads the row's *stratum* (the target's class, or its value bin) as a one-hot
(``ModelDims.stratum_input``, ``model.decoder_stratum``): the reconstruction term teaches it, through
DP-SGD on every row, how each class's features differ. Without it the only carrier of that was the
latent prior per cell, a mean of the cache's noisy sums, which a rare class cannot afford under DP.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadasg_dist.config import ModelConfig
from cadasg_dist.data.transforms import SpanInfo
from cadasg_dist.model.dims import ModelDims

__all__ = ["ModelDims", "CADASGNetworks", "model_dims", "class_groups", "activate"]


def model_dims(output_dim: int, spans: tuple[SpanInfo, ...], n_contexts: int, target: str | None,
               cfg: ModelConfig, class_groups: tuple[int, ...] | None = None) -> ModelDims:
    """The dims of a model of a table with these encoded ``spans`` (the engine's and the federation's);
    ``class_groups``: the target's classes merged into strata (``private.prepare.target_class_groups``)."""
    target_spans = tuple(s for s in spans if s.column == target)
    bins = bin_span_for(target_spans)
    span = strata_span_for(target_spans)
    if class_groups is not None and (span is None or span.role != "value" or bins is not None
                                     or len(class_groups) != span.width):
        class_groups = None  # the target is not (or no longer) the categorical one they were chosen for
    return ModelDims(output_dim, n_contexts, spans, target_spans, span, bins,
                     cfg.target_bins if bins is not None else 1, cfg.decoder_stratum,
                     None if class_groups is None else tuple(class_groups))


def class_groups(expected: np.ndarray, floor: float) -> tuple[int, ...] | None:
    """The group of each class of a categorical target, from its ``expected`` rows (released
    quantities): while some group is expected to hold fewer than ``floor`` rows, the smallest joins
    its smaller adjacent neighbour (in code order: an ordinal target's next value); two groups
    always stay, since one would lose the class structure. None when nothing merges."""
    expected = np.asarray(expected, dtype=float)
    members = [[c] for c in range(len(expected))]
    while len(members) > 2:
        sizes = [float(expected[m].sum()) for m in members]
        i = int(np.argmin(sizes))
        if sizes[i] >= floor:
            break
        lo = i - 1 if i == len(members) - 1 or (i > 0 and sizes[i - 1] <= sizes[i + 1]) else i
        members[lo:lo + 2] = [members[lo] + members[lo + 1]]
    if len(members) == len(expected):
        return None
    return tuple(g for g, m in enumerate(members) for _ in m)


MAX_STRATA = 10


def bin_span_for(target_spans: tuple[SpanInfo, ...]) -> SpanInfo | None:
    """A numeric target's value span (binned into strata), or None for a categorical target."""
    return next((s for s in target_spans if s.kind == "continuous"), None)


def strata_span_for(target_spans: tuple[SpanInfo, ...]) -> SpanInfo | None:
    """The target span that stratifies the prior: a categorical target's classes (at most
    MAX_STRATA), else a numeric target's point-mass indicator, else its missing indicator."""
    for role in ("value", "atom", "missing"):
        for s in target_spans:
            if s.kind == "softmax" and s.role == role and s.width <= MAX_STRATA:
                return s
    return None


def mlp(sizes: list[int]) -> nn.Sequential:
    """Hidden blocks Linear -> LayerNorm -> LeakyReLU(0.2); the caller adds the output layer."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, dims: ModelDims, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = mlp([dims.features + dims.contexts, *cfg.hidden])
        self.head = nn.Linear(cfg.hidden[-1], 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(torch.cat([x, c], dim=1))  # (B, H)
        mean, logvar = self.head(h).chunk(2, dim=1)  # (B, L) each
        return mean, logvar.clamp(-10.0, 5.0)


class Decoder(nn.Module):
    """G(z, c): raw outputs, i.e. values for continuous spans and logits for softmax spans; c is
    ``ModelDims.condition`` (the context one-hot, then the stratum one-hot)."""

    def __init__(self, dims: ModelDims, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = mlp([cfg.latent_dim + dims.decoder_condition, *cfg.hidden])
        self.head = nn.Linear(cfg.hidden[-1], dims.features)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([z, c], dim=1)))  # (B, D)


class Critic(nn.Module):
    def __init__(self, dims: ModelDims, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = mlp([dims.features + dims.contexts, *cfg.critic_hidden])
        self.head = nn.Linear(cfg.critic_hidden[-1], 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([x, c], dim=1))).squeeze(-1)  # (B,)


class UtilityPredictor(nn.Module):
    """Predicts the target column's spans from the other features (target spans masked out)."""

    def __init__(self, dims: ModelDims, cfg: ModelConfig) -> None:
        super().__init__()
        self.target_spans = dims.target_spans
        mask = torch.ones(dims.features)
        for s in dims.target_spans:
            mask[s.start:s.stop] = 0.0
        self.register_buffer("input_mask", mask)
        out = sum(s.width for s in dims.target_spans)
        self.body = mlp([dims.features + dims.contexts, *cfg.utility_hidden])
        self.head = nn.Linear(cfg.utility_hidden[-1], max(out, 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([x * self.input_mask, c], dim=1)))  # (B, T)


class CADASGNetworks(nn.Module):
    def __init__(self, dims: ModelDims, cfg: ModelConfig) -> None:
        super().__init__()
        self.dims = dims
        self.cfg = cfg
        self.encoder = Encoder(dims, cfg)
        self.decoder = Decoder(dims, cfg)
        self.critic = Critic(dims, cfg)
        self.utility = UtilityPredictor(dims, cfg)

    @property
    def device(self) -> torch.device:
        """Where the networks' parameters live (``train.device`` or a Ray worker's GPU)."""
        return self.decoder.head.weight.device

    def one_hot(self, context: torch.Tensor) -> torch.Tensor:
        return F.one_hot(context, self.dims.contexts).to(self.decoder.head.weight.dtype)  # (B, C)


def activate(raw: torch.Tensor, spans: tuple[SpanInfo, ...], *, tau: float | None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Map decoder outputs to the feature space: continuous spans pass through; softmax spans
    become probabilities (``tau=None``) or relaxed one-hot Gumbel-softmax samples (``tau`` given)."""
    parts = []
    for s in spans:
        block = raw[:, s.start:s.stop]
        if s.kind == "continuous":
            parts.append(block)
        elif tau is None:
            parts.append(torch.softmax(block, dim=1))
        else:
            u = torch.rand(block.shape, generator=generator, dtype=block.dtype).to(block.device).clamp(1e-10, 1 - 1e-10)
            gumbel = -torch.log(-torch.log(u))
            parts.append(torch.softmax((block + gumbel) / tau, dim=1))
    return torch.cat(parts, dim=1)
