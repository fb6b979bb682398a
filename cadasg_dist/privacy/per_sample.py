"""DP-SGD building blocks: Poisson batches, per-sample gradients, clipping and Gaussian noise.

Privacy caveats first:

* Sensitivity comes from *per-example* clipping, so each example's loss must depend on that
  example alone: no BatchNorm (refused here), no minibatch statistics, no cross-example terms.
  Terms that only involve generated data (e.g. the critic's ``D(fake)``) touch no private row and may
  be computed outside the clipped per-example loss; everything touching a real row (``-D(x_i)``,
  the gradient penalty on the interpolate of ``x_i``, reconstruction of ``x_i``) must be inside.
* The accounting assumes Poisson sampling (:func:`poisson_batches`): each row joins each batch
  independently with probability q, batches can be empty, and the sum is divided by the *expected*
  batch size q·n, never the realised one (that would leak the batch size). Noise must be added
  even to an empty batch.
* ``torch.Generator`` is not a cryptographically secure RNG and floating-point Gaussian noise is
  not an exact Gaussian (Mironov 2012); ε is the idealised mechanism's.

Per-sample gradients use ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) rather than
Opacus's hooks, because the WGAN-GP gradient penalty differentiates the critic twice, which Opacus's
``GradSampleModule`` does not support (opacus issue #31).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import _checks

# Added to norms before dividing, as Opacus does, so a zero gradient does not produce NaN.
_NORM_EPS = 1e-6


class FunctionalModule:
    """Callable view of ``module`` that runs it on the given parameter and buffer tensors.

    ``call(x)`` runs ``module.forward``; ``call["encoder"](x)`` runs a submodule (e.g. one entry of
    an ``nn.ModuleDict``) with the same tensors, so one loss can go through several networks.
    """

    def __init__(self, module: nn.Module, tensors: Mapping[str, Tensor]) -> None:
        self._module = module
        self._tensors = dict(tensors)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self._module, self._tensors, args, kwargs)

    def __getitem__(self, name: str) -> FunctionalModule:
        try:
            sub = self._module.get_submodule(name)
        except AttributeError as err:
            raise ConfigError(f"module has no submodule {name!r}: {err}") from err
        prefix = name + "."
        return FunctionalModule(sub, {k[len(prefix):]: v for k, v in self._tensors.items() if k.startswith(prefix)})


LossFn = Callable[..., Tensor]


def per_sample_grads(
    module: nn.Module,
    loss_fn: LossFn,
    *batch: Tensor,
    method: str = "vmap",
    randomness: str = "different",
    chunk_size: int | None = None,
    pool: GradBuffers | None = None,
) -> dict[str, Tensor]:
    """Gradient of each example's loss w.r.t. every trainable parameter: ``{name: (B, *param.shape)}``.

    Privacy: the result is raw (unclipped, noiseless); pass it to :func:`clip_and_noise` before it
    touches an optimizer. ``loss_fn`` must compute the loss of ONE example from that example alone.

    ``loss_fn(module_call, *sample)`` gets a :class:`FunctionalModule` and the i-th slice of each
    ``batch`` tensor (batch dim removed) and returns a scalar. It may differentiate the module w.r.t.
    its input (WGAN-GP gradient penalty) with :func:`input_gradient` or ``torch.func.grad``.
    ``torch.autograd.grad`` is not allowed inside ``torch.func`` transforms; for a loss that needs
    it, use ``method="loop"`` (a per-example autograd loop: same result, B times slower).

    Randomness: pass random numbers (interpolation weights, reparameterisation noise) as batch
    tensors so results are reproducible; random ops inside the loss (dropout) draw independently
    per example under the default ``randomness="different"``.
    ``chunk_size`` bounds the vmap chunk to save memory; with it, ``pool`` (a ``GradBuffers``) holds
    the result, reused from call to call (a new one is overwritten by the next call on that pool).
    """
    _check_no_batchnorm(module)
    if method not in ("vmap", "loop"):
        raise ConfigError(f"method must be 'vmap' or 'loop', got {method!r}.")
    n_rows = _batch_size(batch)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if not trainable:
        raise ConfigError("per_sample_grads: the module has no parameter with requires_grad=True.")
    fixed = {n: p.detach() for n, p in module.named_parameters() if not p.requires_grad}
    fixed.update(dict(module.named_buffers()))
    if n_rows == 0:
        return {n: p.new_zeros((0, *p.shape)) for n, p in trainable.items()}
    if method == "loop":
        return _loop_grads(module, loss_fn, batch, trainable, fixed)

    def example_loss(params: dict[str, Tensor], *sample: Tensor) -> Tensor:
        loss = loss_fn(FunctionalModule(module, {**params, **fixed}), *sample)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ConfigError(f"loss_fn must return a scalar tensor per example, got {_describe(loss)}.")
        return loss

    per_example = vmap(grad(example_loss), in_dims=(None,) + (0,) * len(batch), randomness=randomness)
    params = {n: p.detach() for n, p in trainable.items()}
    try:
        whole = chunk_size is None or chunk_size >= n_rows
        grads = per_example(params, *batch) if whole else _chunked(per_example, params, batch, chunk_size, pool)
    except RuntimeError as err:
        if "functorch" in str(err) or "torch.func" in str(err):
            raise ConfigError(
                f"loss_fn uses an operation torch.func cannot transform ({err}); differentiate w.r.t. "
                f"the input with input_gradient()/torch.func.grad, or pass method='loop'."
            ) from err
        raise
    return {n: g.detach() for n, g in grads.items()}


class GradBuffers:
    """Reusable memory for per-example gradients (see ``per_sample_grads``'s ``pool``): one flat
    buffer, grown to the largest request and kept. Fresh tensors of B x parameters floats are
    mapped from the kernel, zero-filled page by page on first touch and unmapped when freed, at
    every step; measured on a 2-core machine at B = 2,000, that was about half of a private step."""

    def __init__(self) -> None:
        self.flat: Tensor | None = None

    def views(self, like: Mapping[str, Tensor], rows: int) -> dict[str, Tensor]:
        """Tensors of shape (rows, *shape) and dtype of each ``like[name]`` (one example's gradient)."""
        sizes = [rows * t.numel() for t in like.values()]
        first = next(iter(like.values()))
        if self.flat is None or self.flat.numel() < sum(sizes) or self.flat.dtype != first.dtype \
                or self.flat.device != first.device:
            self.flat = None  # free the old buffer before the larger one is allocated
            self.flat = torch.empty(sum(sizes), dtype=first.dtype, device=first.device)
        out, at = {}, 0
        for (name, t), size in zip(like.items(), sizes):
            out[name] = self.flat[at:at + size].view(rows, *t.shape)
            at += size
        return out


def _chunked(per_example: Callable[..., dict[str, Tensor]], params: dict[str, Tensor], batch: tuple[Tensor, ...],
             chunk_size: int, pool: GradBuffers | None) -> dict[str, Tensor]:
    """``per_example`` (a vmapped gradient) over ``batch`` in chunks of ``chunk_size`` rows, written
    into one output per parameter (``pool``'s memory when given); what ``vmap(chunk_size=...)`` does."""
    n = _batch_size(batch)
    out: dict[str, Tensor] | None = None
    for a in range(0, n, chunk_size):
        part = per_example(params, *(b[a:a + chunk_size] for b in batch))
        if out is None:
            like = {name: g[0] for name, g in part.items()}
            out = pool.views(like, n) if pool is not None else \
                {name: g.new_empty((n, *g.shape[1:])) for name, g in part.items()}
        for name, g in part.items():
            out[name][a:a + len(g)] = g
    return out


def input_gradient(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """∂ sum(fn(x)) / ∂x, differentiable w.r.t. the parameters ``fn`` closes over.

    Works both inside :func:`per_sample_grads` (vmap) and in eager autograd, so the same loss
    function serves the private and non-private paths. For one example's gradient penalty:
    ``g = input_gradient(lambda z: call(z.unsqueeze(0)), x_tilde)`` then ``(g.norm() - 1) ** 2``.
    """
    return grad(lambda z: fn(z).sum())(x)


def clip_and_noise(
    grads: Mapping[str, Tensor],
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None,
    expected_batch_size: float,
) -> dict[str, Tensor]:
    """DP-SGD aggregate: clip each example's whole gradient to L2 norm C, sum, add N(0, (σC)²), divide.

    Privacy: the L2 sensitivity of the sum is ``max_grad_norm`` (flat clipping across all the given
    parameters), so record ``noise_multiplier`` with ``sensitivity=max_grad_norm`` in the ledger.
    ``expected_batch_size`` is q·n (Poisson sampling), not the realised batch size; call this even
    for an empty batch (B = 0) so the step is still noise. ``noise_multiplier=0`` is non-private.

    ``grads`` is ``{name: (B, *shape)}`` as from :func:`per_sample_grads`; returns ``{name: shape}``.
    """
    return noisy_mean(clipped_sum(grads, max_grad_norm=max_grad_norm), max_grad_norm=max_grad_norm,
                      noise_multiplier=noise_multiplier, generator=generator, expected_batch_size=expected_batch_size)


def clipped_sum(grads: Mapping[str, Tensor], *, max_grad_norm: float) -> dict[str, Tensor]:
    """The first half of :func:`clip_and_noise`: each example's whole gradient clipped to L2 norm C,
    summed over the examples. Privacy: NOT a release; sums over disjoint chunks of one batch add up
    to the batch's sum (the chunked path of ``private.step``), then :func:`noisy_mean` noises it once."""
    clip = _checks.check_positive(max_grad_norm, name="max_grad_norm")
    _grads_batch_size(grads)  # validates that every tensor has the same batch size
    norms = torch.stack([_example_norms(g) for g in grads.values()], dim=1).norm(dim=1)  # (B,)
    factors = (clip / (norms + _NORM_EPS)).clamp(max=1.0)  # (B,)
    return {name: torch.einsum("b,b...->...", factors.to(g.dtype), g) for name, g in grads.items()}


def noisy_mean(summed: Mapping[str, Tensor], *, max_grad_norm: float, noise_multiplier: float,
               generator: torch.Generator | None, expected_batch_size: float) -> dict[str, Tensor]:
    """The second half of :func:`clip_and_noise`: N(0, (σC)²) added to a :func:`clipped_sum`, divided
    by the expected batch size q·n."""
    clip = _checks.check_positive(max_grad_norm, name="max_grad_norm")
    sigma = _checks.check_noise_multiplier(noise_multiplier, allow_zero=True)
    divisor = _checks.check_positive(expected_batch_size, name="expected_batch_size")
    return {name: (s + _gaussian_like(s, std=sigma * clip, generator=generator)) / divisor
            for name, s in summed.items()}


def per_layer_clip_and_noise(
    grads: Mapping[str, Tensor],
    *,
    thresholds: Mapping[str, float],
    noise_multiplier: float,
    generator: torch.Generator | None,
    expected_batch_size: float,
) -> dict[str, Tensor]:
    """DP-SGD with per-layer clipping: tensor l of each example clipped to ``thresholds[l]`` = C_l.

    Privacy: the L2 sensitivity of the summed gradient is sqrt(Σ_l C_l²) (:func:`per_layer_sensitivity`)
    and the noise on tensor l is N(0, (σ · sqrt(L) · C_l)²) with L the number of tensors
    (:func:`per_layer_noise_stds`). That makes the whole release exactly as private as one Gaussian
    mechanism with noise multiplier σ, so the ledger records ``noise_multiplier`` as is. Noise of only
    σ · C_l per tensor would be a mechanism with multiplier σ / sqrt(L) — L times the RDP — so the
    sqrt(L) is not optional; the proof is in docs/concepts/accounting.md.

    ``thresholds`` must name exactly the tensors of ``grads``. Returns ``{name: shape}``.
    """
    if set(thresholds) != set(grads):
        raise ConfigError(
            f"thresholds must name exactly the gradient tensors; missing {sorted(set(grads) - set(thresholds))}, "
            f"unknown {sorted(set(thresholds) - set(grads))}."
        )
    divisor = _checks.check_positive(expected_batch_size, name="expected_batch_size")
    stds = per_layer_noise_stds(thresholds, noise_multiplier=noise_multiplier)
    _grads_batch_size(grads)  # validates that every tensor has the same batch size
    out = {}
    for name, g in grads.items():
        clip = float(thresholds[name])
        factors = (clip / (_example_norms(g) + _NORM_EPS)).clamp(max=1.0)  # (B,)
        summed = torch.einsum("b,b...->...", factors.to(g.dtype), g)  # (*shape)
        out[name] = (summed + _gaussian_like(summed, std=stds[name], generator=generator)) / divisor
    return out


def per_layer_sensitivity(thresholds: Mapping[str, float]) -> float:
    """L2 sensitivity sqrt(Σ_l C_l²) of a per-layer-clipped sum (the ledger's ``sensitivity`` field)."""
    return math.sqrt(sum(_checks.check_positive(c, name=f"threshold {n!r}") ** 2 for n, c in thresholds.items()))


def per_layer_noise_stds(thresholds: Mapping[str, float], *, noise_multiplier: float) -> dict[str, float]:
    """Noise standard deviation per tensor, σ · sqrt(L) · C_l, that keeps the effective multiplier at σ."""
    if not thresholds:
        raise ConfigError("per-layer clipping needs at least one threshold.")
    sigma = _checks.check_noise_multiplier(noise_multiplier, allow_zero=True)
    root_l = math.sqrt(len(thresholds))
    return {n: sigma * root_l * _checks.check_positive(c, name=f"threshold {n!r}") for n, c in thresholds.items()}


def poisson_batches(
    n_rows: int, sample_rate: float, steps: int, generator: torch.Generator | None = None
) -> Iterator[Tensor]:
    """Yield ``steps`` index tensors; each row is in each batch independently with probability q.

    Privacy: this is the sampling the accountant assumes. Batches have random size (mean q·n) and
    may be empty; train on them as they come and divide by q·n, never skip or pad a batch.
    """
    n_rows = _checks.check_steps(n_rows, name="n_rows")
    q = _checks.check_sample_rate(sample_rate)
    steps = _checks.check_steps(steps, name="steps", minimum=0)
    device = generator.device if generator is not None else None
    for _ in range(steps):
        mask = torch.rand(n_rows, generator=generator, device=device) < q  # (n_rows,)
        yield mask.nonzero().flatten()


# -- helpers -------------------------------------------------------------------------------------


def _loop_grads(
    module: nn.Module, loss_fn: LossFn, batch: tuple[Tensor, ...], trainable: dict[str, Tensor],
    fixed: dict[str, Tensor],
) -> dict[str, Tensor]:
    names, params = list(trainable), list(trainable.values())
    rows: list[list[Tensor]] = [[] for _ in names]
    call = FunctionalModule(module, {**trainable, **fixed})
    for i in range(batch[0].shape[0]):
        loss = loss_fn(call, *(t[i] for t in batch))
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ConfigError(f"loss_fn must return a scalar tensor per example, got {_describe(loss)}.")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for j, (g, p) in enumerate(zip(grads, params, strict=True)):
            rows[j].append(torch.zeros_like(p) if g is None else g.detach())
    return {n: torch.stack(r) for n, r in zip(names, rows, strict=True)}


def _check_no_batchnorm(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"submodule {name or '<root>'!r} is {type(sub).__name__}, which mixes examples within a "
                f"batch, so per-example clipping no longer bounds one row's influence; use LayerNorm or "
                f"GroupNorm in private training."
            )


def _batch_size(batch: tuple[Tensor, ...]) -> int:
    if not batch:
        raise ConfigError("per_sample_grads needs at least one batch tensor (B, ...).")
    sizes = {t.shape[0] if isinstance(t, Tensor) and t.dim() > 0 else None for t in batch}
    if len(sizes) != 1 or None in sizes:
        raise ConfigError(
            f"every batch argument must be a tensor with the same leading batch dimension, got shapes "
            f"{[tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in batch]}."
        )
    return sizes.pop()


def _grads_batch_size(grads: Mapping[str, Tensor]) -> int:
    if not grads:
        raise ConfigError("no gradients given: grads must map parameter names to (B, *shape) tensors.")
    sizes = {g.shape[0] for g in grads.values()}
    if len(sizes) != 1:
        raise ConfigError(f"per-sample gradients disagree on the batch size: {sorted(sizes)}.")
    return sizes.pop()


def _example_norms(g: Tensor) -> Tensor:
    """L2 norm of each example's slice of a (B, *shape) tensor: (B,). Works for B = 0 and scalar params."""
    return g.reshape(g.shape[0], math.prod(g.shape[1:])).norm(dim=1)


def _gaussian_like(t: Tensor, *, std: float, generator: torch.Generator | None) -> Tensor:
    if std == 0:
        return torch.zeros_like(t)
    # drawn on the generator's device (the CPU in training), then moved to the gradients' device
    device = generator.device if generator is not None else t.device
    return torch.randn(t.shape, generator=generator, device=device, dtype=t.dtype).to(t.device) * std


def _describe(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
