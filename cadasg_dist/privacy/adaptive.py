"""Adaptive clipping (Andrew et al. 2021, "Differentially private learning with adaptive clipping").

Privacy caveats first: the clip norm C is moved each step towards a target quantile of the
per-example gradient norms, and that quantile is estimated from the *private* batch, so it is a
release too. It is charged here by folding it into the gradient release of the same step: the
step is one Gaussian mechanism on the concatenation (summed clipped gradients, centred count of
examples under C). With gradient noise multiplier σ_g and count noise standard deviation σ_b, the
pair is exactly as private as one Gaussian mechanism with multiplier
z = (σ_g⁻² + (2σ_b)⁻²)^(-1/2); :func:`gradient_noise_for_adaptive_clipping` inverts that, so the
ledger keeps recording the calibrated z (not σ_g) for the step and nothing else. Do not also record
the count as a separate mechanism, and do not use the noiseless update (σ_b = 0) in a private run.

Flat clipping only (one C for all parameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import _checks


def per_example_norms(grads: Mapping[str, Tensor]) -> Tensor:
    """Global L2 norm of each example's gradient over all tensors of ``{name: (B, *shape)}``: (B,)."""
    if not grads:
        raise ConfigError("no gradients given: grads must map parameter names to (B, *shape) tensors.")
    squares = [g.reshape(g.shape[0], math.prod(g.shape[1:])).pow(2).sum(dim=1) for g in grads.values()]  # (B,) each
    return torch.stack(squares, dim=1).sum(dim=1).sqrt()  # (B,)


def gradient_noise_for_adaptive_clipping(*, noise_multiplier: float, count_noise_std: float) -> float:
    """Gradient noise multiplier σ_g such that (gradient, count) together have multiplier ``noise_multiplier``.

    σ_g = (z⁻² − (2σ_b)⁻²)^(-1/2) with z = ``noise_multiplier`` and σ_b = ``count_noise_std``
    (Andrew et al. 2021, Theorem 1). σ_g > z: the quantile estimate costs some gradient noise.
    Raises when 2σ_b ≤ z (the count alone would spend the whole step); Andrew et al. suggest
    σ_b ≈ expected_batch_size / 20.
    """
    z = _checks.check_noise_multiplier(noise_multiplier)
    count_std = _checks.check_noise_multiplier(count_noise_std, name="count_noise_std")
    rest = z**-2 - (2 * count_std) ** -2
    if rest <= 0:
        raise ConfigError(
            f"count_noise_std={count_std} is too small for noise_multiplier={z}: the clipped-count release "
            f"alone would spend the whole step; use count_noise_std > {z / 2:.4g} (e.g. expected_batch_size / 20)."
        )
    return rest**-0.5


def adaptive_clip_update(
    norms: Tensor,
    *,
    clip: float,
    target_quantile: float,
    learning_rate: float,
    count_noise_std: float,
    generator: torch.Generator | None,
    expected_batch_size: float,
) -> float:
    """Next clip norm: C · exp(−η (b̃ − γ)), b̃ the noisy fraction of examples with norm ≤ C.

    Privacy: release this only together with the step's gradient noised at
    :func:`gradient_noise_for_adaptive_clipping` and recorded at the combined multiplier (see the
    module docstring); ``norms`` must be the *unclipped* per-example norms of the same Poisson batch.
    b̃ = (Σ_i (1[‖g_i‖ ≤ C] − ½) + N(0, σ_b²)) / (q·n) + ½ uses the expected batch size q·n.
    ``count_noise_std=0`` is the noiseless (non-private) update.
    """
    clip = _checks.check_positive(clip, name="clip")
    if not 0.0 < float(target_quantile) < 1.0:
        raise ConfigError(f"target_quantile must be in (0, 1), got {target_quantile!r}; 0.5 (the median) is usual.")
    rate = _checks.check_positive(learning_rate, name="learning_rate")
    count_std = _checks.check_noise_multiplier(count_noise_std, name="count_noise_std", allow_zero=True)
    divisor = _checks.check_positive(expected_batch_size, name="expected_batch_size")
    if norms.dim() != 1:
        raise ConfigError(f"norms must be the (B,) per-example gradient norms, got shape {tuple(norms.shape)}.")
    centred = float(((norms <= clip).to(torch.float64) - 0.5).sum())
    if count_std > 0:
        device = generator.device if generator is not None else norms.device
        centred += count_std * float(torch.randn((), generator=generator, device=device, dtype=torch.float64))
    fraction_below = centred / divisor + 0.5
    return clip * math.exp(-rate * (fraction_below - float(target_quantile)))
