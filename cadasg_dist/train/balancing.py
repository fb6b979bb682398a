"""Adaptive loss balancing: λi ← λi·‖∇θ L_ref‖ / ‖∇θ L_i‖, smoothed and bounded.

Read literally, the multiplicative rule compounds every step. We use its fixed point instead: the
target weight of term i is its initial weight times the ratio of gradient norms (with L_ref the
WGAN term), so at equilibrium every weighted term pushes the shared parameters as hard as the
adversarial term, scaled by the user's initial weights. The target is smoothed by an EMA and kept
within [balance_min, balance_max] times the initial weight, so one noisy step cannot swing it.

Privacy: the gradient norms must come from already-privatised gradients (or from terms that read
no real rows) when training is private; the training step passes those in.
"""

from __future__ import annotations

import math

from cadasg_dist.config import LossConfig

TERMS = ("wgan", "kl", "cov", "utility")
REFERENCE = "wgan"


class LossBalancer:
    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.initial = {t: float(getattr(config, t)) for t in TERMS}
        self.current = dict(self.initial)

    def weights(self) -> dict[str, float]:
        return dict(self.current)

    def update(self, grad_norms: dict[str, float]) -> dict[str, float]:
        """Move the weights toward the gradient-norm ratio; a no-op with fixed weights."""
        if not self.config.adaptive:
            return self.weights()
        ref = grad_norms.get(REFERENCE, 0.0)
        beta = self.config.balance_smoothing
        for term, norm in grad_norms.items():
            if term == REFERENCE or self.initial[term] == 0.0:
                continue
            if not (math.isfinite(norm) and norm > 0 and math.isfinite(ref) and ref > 0):
                continue
            init = self.initial[term]
            target = init * ref / norm
            target = min(max(target, init * self.config.balance_min), init * self.config.balance_max)
            self.current[term] = beta * self.current[term] + (1 - beta) * target
        return self.weights()

    def state_dict(self) -> dict[str, float]:
        return dict(self.current)

    def load_state_dict(self, state: dict[str, float]) -> None:
        unknown = set(state) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms in balancer state: {sorted(unknown)}")
        self.current.update({k: float(v) for k, v in state.items()})
