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

:class:`PerLayerAdaptiveClipper` does the same per tensor: each tensor's threshold follows the
target quantile of that tensor's per-example norms, and the L counts join the step's gradient
release in the same way (see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import _checks
from cadasg_dist.privacy.per_sample import per_layer_clip_and_noise, per_layer_noise_stds


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


class PerLayerAdaptiveClipper:
    """Per-layer clipping whose thresholds track a quantile of each tensor's per-example norms.

    Privacy caveats first: one call of :meth:`release` is two releases from the same Poisson batch,
    (a) the gradient sum with tensor l of each example clipped to C_l and noise N(0, (σ_g·√L·C_l)²)
    on it, and (b) for each of the L tensors the noisy centred count Σ_i (1[‖g_il‖ ≤ C_l] − ½) +
    N(0, σ_b²), from which the next C_l is computed. By the whitening argument of
    docs/concepts/accounting.md §6, (a) alone is one Gaussian mechanism with multiplier σ_g; (b) is a
    vector whose L2 sensitivity is √L/2 with noise σ_b per coordinate. Together they are one
    Gaussian mechanism with multiplier z, 1/z² = 1/σ_g² + L/(2σ_b)², so the ledger records the
    step's z and nothing else; :meth:`gradient_noise` inverts it. Thresholds start at C/√L each
    (the flat clip's sensitivity C) and are a function of released values only.
    """

    def __init__(self, names: list[str], *, clip: float, target_quantile: float, learning_rate: float,
                 count_noise_std: float) -> None:
        if not names:
            raise ConfigError("per-layer clipping needs at least one tensor")
        clip = _checks.check_positive(clip, name="clip")
        self.thresholds = {n: clip / math.sqrt(len(names)) for n in names}
        self.target_quantile, self.learning_rate = float(target_quantile), float(learning_rate)
        self.count_noise_std = _checks.check_noise_multiplier(count_noise_std, name="count_noise_std")
        self.last_stds: dict[str, float] = {}  # noise sd per tensor of the last release, before the update

    def gradient_noise(self, noise_multiplier: float) -> float:
        """σ_g such that (gradients, L counts) together have multiplier ``noise_multiplier``."""
        z = _checks.check_noise_multiplier(noise_multiplier)
        rest = z**-2 - len(self.thresholds) * (2 * self.count_noise_std) ** -2
        if rest <= 0:
            raise ConfigError(
                f"count_noise_std={self.count_noise_std:.4g} is too small for noise_multiplier={z:.4g} with "
                f"{len(self.thresholds)} tensors: the counts alone would spend the step; use a larger batch")
        return rest**-0.5

    def release(self, grads: Mapping[str, Tensor], *, noise_multiplier: float, generator: torch.Generator | None,
                expected_batch_size: float) -> dict[str, Tensor]:
        """The step's noisy gradient ``{name: shape}``; then every threshold moves (see the class docstring)."""
        sigma_g = self.gradient_noise(noise_multiplier)
        self.last_stds = per_layer_noise_stds(self.thresholds, noise_multiplier=sigma_g)
        out = per_layer_clip_and_noise(grads, thresholds=self.thresholds, noise_multiplier=sigma_g,
                                       generator=generator, expected_batch_size=expected_batch_size)
        for name, g in grads.items():
            norms = g.reshape(g.shape[0], -1).norm(dim=1)
            self.thresholds[name] = adaptive_clip_update(
                norms, clip=self.thresholds[name], target_quantile=self.target_quantile,
                learning_rate=self.learning_rate, count_noise_std=self.count_noise_std, generator=generator,
                expected_batch_size=expected_batch_size)
        return out

    def state_dict(self) -> dict[str, float]:
        return dict(self.thresholds)
