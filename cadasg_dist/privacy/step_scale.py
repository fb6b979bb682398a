"""Noise-aware Adam steps: give back the step length that DP noise takes from Adam.

Adam divides each coordinate's step by the running root-mean-square of its gradient. Under DP-SGD
that gradient is the clipped mean plus Gaussian noise of a KNOWN variance per coordinate,
φ = (σ·C / E)² (σ the release's noise multiplier, C the clip norm, E the expected batch), so the
running second moment is V ≈ S + Φ (S: the signal's, Φ: the noise's), and at a small ε Φ dominates:
the steps along the signal shrink by sqrt(S / (S + Φ)) as the noise grows. Measured as a fixed
twice-larger learning rate helping at ε = 1 and in the federated silos
(docs/concepts/decisions.md); this makes the correction follow the noise instead of a fixed factor.

``NoiseAwareSteps`` keeps, per parameter tensor, slow exponential averages of its gradient's mean
square V and of the noise variance Φ it carried, and after ``optimizer.step()`` scales that
tensor's update by sqrt(V / (V − Φ)), at most ``max_scale`` (so the scale is 1 without noise and
grows with it). It is a per-tensor form of the bias correction of Tang et al. ("DP-AdamBC", AAAI
2024): per tensor rather than per coordinate, because one coordinate's V − Φ is itself mostly noise.

Privacy: post-processing. It reads the released (clipped and noised) gradients,
the noise multipliers, clip norms and expected batch sizes (public: fixed by the plan), and the
loss balancer's weight (computed from released gradients). No budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

# The averages behind the scale span ~100 steps: a tensor's mean squared gradient minus the known
# noise variance is a small difference of large numbers when the noise dominates, and Adam's own
# second moment (β₂ = 0.9 here, ~10 steps) is too short to estimate it.
SMOOTHING = 0.99


class NoiseAwareSteps:
    """Hooks on an Adam optimizer that scale each tensor's update for the known DP noise in its gradient.

    ``noise_std()`` is called after every step and maps id(param) to the standard deviation of the
    noise on each coordinate of that step's gradient (missing or 0: none). ``max_scale`` caps the
    scale; 1 turns it off.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, noise_std: Callable[[], dict[int, float]],
                 max_scale: float) -> None:
        if not max_scale >= 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.optimizer = optimizer
        self.noise_std = noise_std
        self.max_scale = float(max_scale)
        self.second_moment: dict[int, float] = {}  # id(param) -> running average of mean(grad²)
        self.noise: dict[int, float] = {}  # id(param) -> running average of the noise variance in it
        self.last_scales: dict[int, float] = {}
        self._start: dict[int, torch.Tensor] = {}
        self._handles = [optimizer.register_step_pre_hook(self._before),
                         optimizer.register_step_post_hook(self._after)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def mean_scale(self) -> float:
        return sum(self.last_scales.values()) / len(self.last_scales) if self.last_scales else 1.0

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def _before(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._start = {id(p): p.detach().clone() for p in self._params()}

    @torch.no_grad()
    def _after(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        stds = self.noise_std()
        self.last_scales = {}
        for p in self._params():
            scale = self._scale(p, stds.get(id(p), 0.0))
            self.last_scales[id(p)] = scale
            if scale != 1.0 and id(p) in self._start:
                start = self._start[id(p)]
                p.copy_(start + scale * (p - start))
        self._start = {}

    def _scale(self, p: torch.Tensor, std: float) -> float:
        g2 = float(p.grad.detach().float().pow(2).mean())
        r = SMOOTHING
        seen, noise = self.second_moment.get(id(p), 0.0), self.noise.get(id(p), 0.0)
        seen = self.second_moment[id(p)] = r * seen + (1.0 - r) * g2
        noise = self.noise[id(p)] = r * noise + (1.0 - r) * std * std
        if noise <= 0.0 or seen <= 0.0:
            return 1.0
        return math.sqrt(seen / max(seen - noise, seen / self.max_scale ** 2))
