"""The DP training step: the hooks ``train.step.train_step`` calls when ``state.dp`` is set.

Privacy caveats first:

* One training step reads ONE Poisson sample of units (rate q) through several Gaussian releases:
  the critic's clipped gradient (``critic_steps`` times), the utility predictor's, the
  encoder+decoder's (reconstruction + β·KL) and the cache's clipped sufficient statistics. Releases
  that share a sample are not independent subsampled mechanisms: their adaptive composition on the
  sample is one Gaussian mechanism with σ_step⁻² = Σ_i σ_i⁻², subsampled once. The ledger records
  exactly that, one ``train_step[...]`` entry per step. Accounting the parts as separate subsampled
  mechanisms would under-report ε (q = 0.0255, 5,850 steps, four parts at σ = 2: 11.3 vs 14.9).
* Nothing unclipped reads a real row. The critic's fake term joins each example's clipped loss
  (the fake row is generated for that example's cell), and the generator's adversarial, covariance
  and utility terms are recomputed on cells drawn from the noisy cache (``public_terms``) instead of
  the batch's cells. The loss balancer sees the privatised VAE gradient's norm (debiased for the
  noise, which is post-processing) and the public terms' norms.
* Metrics computed on real rows (``REAL_ROW_METRICS``) are dropped from the history, the progress
  reports and the artifact.
* The noise comes from the OS's entropy, never from ``train.seed`` (noise anyone can replay
  protects nothing); a seed is accepted for tests only.

``DPState`` is also the run's budget guard: the one training loop (``train.loop``) asks
``allows_step`` before every step.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.model.losses import utility_loss
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.adaptive import PerLayerAdaptiveClipper
from cadasg_dist.privacy.analysis import epsilon_from_history
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.privacy.per_sample import (
    GradBuffers,
    clip_and_noise,
    clipped_sum,
    input_gradient,
    noisy_mean,
    per_sample_grads,
)
from cadasg_dist.privacy.step_scale import NoiseAwareSteps
from cadasg_dist.private.budget import FINAL_CACHE, BudgetPlan, step_name
from cadasg_dist.train.step import Batch, Priors, TrainState, public_terms, vae_terms

log = logging.getLogger(__name__)

# Metrics computed on real rows: never reported or saved in a private run.
REAL_ROW_METRICS = ("loss_vae", "loss_critic", "loss_predictor")
# vmap chunks hold at most this many per-example floats of the largest weight: measured on CPU,
# chunks of ~64 examples made the 256-wide critic's per-example gradients 1.5x faster, while
# chunking the 128-wide one (all 500 at once) made it slower.
CHUNK_FLOATS = 6_000_000


@dataclass
class PrivateBatch(Batch):
    units: Tensor | None = None  # (B,) index of each row's unit within the batch; None = one row per unit


class DPState:
    """DP hooks that ``train_step`` calls when ``state.dp`` is set, plus the run's accounting.

    Privacy: every ``privatize_*`` hook computes per-example gradients of the terms that read real
    rows, averages them per unit, clips each unit to ``max_grad_norm``, adds N(0, (σ·C)²) and
    divides by the *expected* number of units q·N (``clip_and_noise``).
    """

    def __init__(self, cfg: CADASGConfig, plan: BudgetPlan, ledger: PrivacyLedger, *, n_units: int,
                 has_utility: bool, strata: int, n_cells: int, final_cache: CacheConfig | None = None,
                 seed: int | None = None) -> None:
        self.plan = plan
        self.final_cache = final_cache  # the cache config of the final pass's release (its own multiplier)
        self.ledger = ledger
        self.clip = cfg.privacy.max_grad_norm
        self.expected_units = plan.sample_rate * n_units
        self.public_rows = cfg.train.batch_size  # generated rows per step for the public terms
        self.name = step_name(cfg, has_utility)
        self.target = cfg.privacy.epsilon
        self.steps_taken = 0
        self.stop_reason: str | None = None
        self.final_released = False
        self.noise = noise_generator(seed, 7919)  # None: secret (OS entropy); a seed only for tests
        self._strata = strata
        self._cell_weights = torch.ones(n_cells)
        self._vae: dict[str, Tensor] = {}
        self._pair: nn.ModuleDict | None = None
        self._grads = GradBuffers()  # per-example gradients' memory, reused step after step
        self._final = plan.full_pass.get(FINAL_CACHE)
        self._per_layer = cfg.privacy.clipping == "per_layer"
        self._clippers: dict[str, PerLayerAdaptiveClipper] = {}  # per part, with privacy.clipping = per_layer
        self._quantile, self._clip_rate = cfg.privacy.clip_quantile, cfg.privacy.clip_learning_rate
        self._max_step_scale = cfg.privacy.max_step_scale
        self._vae_weight = 1.0  # the balancer's weight on the last VAE release
        self.step_scales: dict[str, NoiseAwareSteps] = {}

    def attach(self, state: TrainState) -> None:
        """Make ``state``'s steps private (``state.dp = self``) and, with ``privacy.max_step_scale`` > 1,
        hook its optimizers to scale each tensor's Adam step for the known noise (post-processing)."""
        state.dp = self
        if self._max_step_scale <= 1.0 or self.step_scales:
            return
        nets = state.nets
        pair = self._encoder_decoder(nets)
        parts = {"critic": (state.opt_critic, nets.critic, "dpsgd/critic"),
                 "utility": (state.opt_utility, nets.utility, "dpsgd/utility"),
                 "generator": (state.opt_generator, pair, "dpsgd/vae")}
        for key, (opt, module, part) in parts.items():
            if part not in self.plan.parts:
                continue
            named = list(module.named_parameters())
            weight = (lambda: self._vae_weight) if part == "dpsgd/vae" else (lambda: 1.0)

            def stds(named: list = named, part: str = part, weight: Any = weight) -> dict[int, float]:
                w = weight()
                return {id(p): w * self.gradient_noise_std(part, n) for n, p in named}

            self.step_scales[key] = NoiseAwareSteps(opt, stds, self._max_step_scale)

    def gradient_noise_std(self, part: str, name: str) -> float:
        """Standard deviation of the noise on each coordinate of tensor ``name``'s gradient, as the
        optimizer sees it (after the division by the expected batch)."""
        return self._noise_std(part, name) / self.expected_units

    # --- the hooks train_step calls --------------------------------------------------------------
    def privatize_critic(self, nets: CADASGNetworks, batch: Batch, fake: Tensor, onehot: Tensor, alpha: Tensor,
                         cfg: CADASGConfig) -> None:
        """DP gradient of the whole critic loss D(x̃_i) − D(x_i) + λ·GP_i, REPLACING the critic's .grad.

        The fake row x̃_i is generated for example i's cell, so its term joins i's clipped loss; the
        fake term step.py already back-propagated (a mean over the batch's cells) is discarded.
        """
        lam = cfg.loss.gradient_penalty

        def example_loss(call: Any, x: Tensor, fk: Tensor, c: Tensor, a: Tensor) -> Tensor:
            c1 = c.unsqueeze(0)
            mixed = a * x + (1 - a) * fk
            slope = input_gradient(lambda z: call(z.unsqueeze(0), c1), mixed)
            penalty = ((slope.pow(2).sum() + 1e-12).sqrt() - 1.0).pow(2)
            return (call(fk.unsqueeze(0), c1) - call(x.unsqueeze(0), c1)).squeeze(0) + lam * penalty

        grads = self._private_grads(nets.critic, example_loss, batch, "dpsgd/critic", fake.detach(), onehot, alpha)
        _write(nets.critic, grads, scale=1.0)

    def privatize_utility(self, nets: CADASGNetworks, batch: Batch, onehot: Tensor, cfg: CADASGConfig) -> None:
        spans = nets.dims.target_spans

        def example_loss(call: Any, x: Tensor, c: Tensor) -> Tensor:
            return utility_loss(call(x.unsqueeze(0), c.unsqueeze(0)), x.unsqueeze(0), spans).squeeze(0)

        _write(nets.utility, self._private_grads(nets.utility, example_loss, batch, "dpsgd/utility", onehot),
               scale=1.0)

    def privatize_vae(self, nets: CADASGNetworks, batch: Batch, onehot: Tensor, eps: Tensor, cfg: CADASGConfig,
                      shared: list[Tensor]) -> float:
        """DP gradient of L_rec + β·L_KL for encoder+decoder, stored for ``scale_private_grads``.

        Returns the norm of the privatised gradient on ``shared``, debiased for the noise's expected
        contribution (post-processing), for the loss balancer.
        """
        pair = self._encoder_decoder(nets)
        beta, dims = cfg.loss.kl_beta, nets.dims

        def example_loss(call: Any, x: Tensor, c: Tensor, e: Tensor) -> Tensor:
            view = SimpleNamespace(encoder=call["encoder"], decoder=call["decoder"], dims=dims)
            loss, _, _ = vae_terms(view, x.unsqueeze(0), c.unsqueeze(0), e.unsqueeze(0), beta)
            return loss.squeeze(0)

        self._vae = self._private_grads(pair, example_loss, batch, "dpsgd/vae", onehot, eps)
        names = {id(p): n for n, p in pair.named_parameters()}
        square = sum(float(self._vae[names[id(p)]].pow(2).sum())
                     - p.numel() * (self._noise_std("dpsgd/vae", names[id(p)]) / self.expected_units) ** 2
                     for p in shared)
        return math.sqrt(max(square, 0.0))

    def scale_private_grads(self, nets: CADASGNetworks, weight: float) -> None:
        self._vae_weight = weight
        _write(self._encoder_decoder(nets), self._vae, scale=weight)

    def public_terms(self, nets: CADASGNetworks, priors: Priors, cfg: CADASGConfig, generator: torch.Generator
                     ) -> dict[str, Tensor]:
        """The generator's public terms on ``public_rows`` rows of cells drawn from the noisy cache.

        The same terms as the local step (``step.public_terms``); only the cells differ.
        """
        cells = torch.multinomial(self._cell_weights, self.public_rows, replacement=True, generator=generator)
        cells = cells.to(nets.device)
        return public_terms(nets, priors, cells, nets.one_hot(cells // self._strata), generator, cfg)

    def account_step(self, cache: ContextCache) -> None:
        """Record the step (all its releases, one composed mechanism) and refresh the public cell
        weights from the cache it just released."""
        self.ledger.record(name=self.name, noise_multiplier=self.plan.step_sigma,
                           sample_rate=self.plan.sample_rate, steps=1)
        self.steps_taken += 1
        counts = cache.cell_counts().float()
        self._cell_weights = counts if float(counts.sum()) > 0 else torch.ones_like(counts)

    def step_metrics(self) -> dict[str, float]:
        """The mean Adam step scale per network (``privacy.max_step_scale``); empty when off."""
        return {f"step_scale_{key}": hooks.mean_scale() for key, hooks in self.step_scales.items()}

    # --- budget ---------------------------------------------------------------------------------
    def epsilon(self) -> float:
        return self.ledger.epsilon()

    def next_step_fits(self) -> bool:
        """Whether one more step, plus the reserved final cache pass, stays within the target."""
        history = [m.history_entry() for m in self.ledger.mechanisms]
        history.append((self.plan.step_sigma, self.plan.sample_rate, 1))
        if self._final is not None and not self.final_released:
            history.append((self._final, 1.0, 1))
        return epsilon_from_history(history, delta=self.plan.delta) <= self.target

    def allows_step(self) -> bool:
        """The budget guard: whether one more step (and the reserved final cache pass) stays within
        the target. Once it does not, training stops for good and ``stop_reason`` says why."""
        if self.stop_reason is None and self.next_step_fits():
            return True
        if self.stop_reason is None:
            self.stop_reason = (f"the next step would exceed epsilon={self.target} (spent {self.epsilon():.4f} after "
                                f"{self.steps_taken} of {self.plan.steps} steps)")
            log.warning("private training stopped early: %s", self.stop_reason)
        return False

    @contextlib.contextmanager
    def final_release(self, cache: ContextCache) -> Iterator[None]:
        """Run the final cache pass inside this block: the cache noises at the final pass's own
        multiplier, and the release is recorded in the ledger once the block ends."""
        ema = cache.config
        if self.final_cache is not None:
            cache.config = self.final_cache
        try:
            yield
        finally:
            cache.config = ema
        self.account_final()

    def account_final(self) -> None:
        self.ledger.record(name=FINAL_CACHE, noise_multiplier=self._final, sample_rate=1.0, steps=1)
        self.final_released = True

    def report(self) -> dict[str, Any]:
        """Plain data for the artifact's meta: the plan, what was spent, and whether training stopped early."""
        p = self.plan
        return {
            "epsilon_target": p.epsilon, "delta": p.delta, "epsilon_spent": self.epsilon(),
            "sample_rate": p.sample_rate, "expected_units_per_step": self.expected_units,
            "steps_planned": p.steps, "steps_taken": self.steps_taken, "stopped_early": self.stop_reason is not None,
            "stop_reason": self.stop_reason, "max_grad_norm": self.clip, "renyi_order": p.order,
            "noise_multipliers": {"train_step": p.step_sigma, **p.parts, **p.full_pass},
            "clipping": "per_layer" if self._per_layer else "flat",
            **({"final_thresholds": {part: c.state_dict() for part, c in self._clippers.items()}}
               if self._per_layer else {}),
        }

    # --- helpers --------------------------------------------------------------------------------
    def _private_grads(self, module: nn.Module, loss: Any, batch: Batch, part: str, *more: Tensor
                       ) -> dict[str, Tensor]:
        """The released (clipped, noised, averaged) gradient of ``part``'s per-example ``loss`` on
        ``(batch.x, *more)``.

        With flat clipping and one row per unit, each chunk of examples is clipped and summed as it
        comes and the batch's sum noised once: the same release as ``clip_and_noise`` on the whole
        batch (each example is clipped on its own; only the sum's order of addition differs), without
        holding every example's gradient at once (memory-bound on a CPU: measured in
        docs/results/privacy.md). Per-unit averaging and per-layer clipping need them all."""
        tensors = (batch.x, *more)
        if self._per_layer or getattr(batch, "units", None) is not None:
            return self._release(_per_example(module, loss, *tensors, pool=self._grads), batch, part)
        chunk = _chunk_rows(module)
        summed: dict[str, Tensor] = {}
        for start in range(0, max(len(batch.x), 1), chunk):
            grads = per_sample_grads(module, loss, *(t[start:start + chunk] for t in tensors))
            for name, g in clipped_sum(grads, max_grad_norm=self.clip).items():
                summed[name] = g if name not in summed else summed[name] + g
        return noisy_mean(summed, max_grad_norm=self.clip, noise_multiplier=self.plan.parts[part],
                          generator=self.noise, expected_batch_size=self.expected_units)

    def _release(self, grads: dict[str, Tensor], batch: Batch, part: str) -> dict[str, Tensor]:
        units = getattr(batch, "units", None)
        if units is not None:
            grads = _per_unit(grads, units)
        if self._per_layer:
            if part not in self._clippers:
                # Andrew et al.'s count noise: about a twentieth of the expected batch
                self._clippers[part] = PerLayerAdaptiveClipper(
                    list(grads), clip=self.clip, target_quantile=self._quantile, learning_rate=self._clip_rate,
                    count_noise_std=max(self.expected_units / 20, 1.0))
            return self._clippers[part].release(grads, noise_multiplier=self.plan.parts[part], generator=self.noise,
                                                expected_batch_size=self.expected_units)
        return clip_and_noise(grads, max_grad_norm=self.clip, noise_multiplier=self.plan.parts[part],
                              generator=self.noise, expected_batch_size=self.expected_units)

    def _noise_std(self, part: str, name: str) -> float:
        """Standard deviation of the noise the last release of ``part`` added to tensor ``name``."""
        if self._per_layer:
            return self._clippers[part].last_stds[name]
        return self.plan.parts[part] * self.clip

    def _encoder_decoder(self, nets: CADASGNetworks) -> nn.ModuleDict:
        if self._pair is None:
            self._pair = nn.ModuleDict({"encoder": nets.encoder, "decoder": nets.decoder})
        return self._pair


def _chunk_rows(module: nn.Module) -> int:
    largest = max(p.numel() for p in module.parameters() if p.requires_grad)
    return max(16, CHUNK_FLOATS // largest)


def _per_example(module: nn.Module, loss: Any, *batch: Tensor, pool: GradBuffers | None = None) -> dict[str, Tensor]:
    """Per-example gradients, chunked; with ``pool``, in its memory (valid until the next call)."""
    chunk = _chunk_rows(module)
    return per_sample_grads(module, loss, *batch, chunk_size=chunk if chunk < len(batch[0]) else None, pool=pool)


def noise_generator(seed: int | None, offset: int) -> torch.Generator:
    """A generator for noise or sampling: secret (OS entropy) unless a test passes ``seed``."""
    return torch.Generator().manual_seed(entropy.secret_seed() if seed is None else seed + offset)


def _per_unit(grads: dict[str, Tensor], units: Tensor) -> dict[str, Tensor]:
    """Mean per-example gradient of each unit's rows: {name: (U, *shape)}."""
    n = int(units.max()) + 1 if len(units) else 0
    counts = torch.bincount(units, minlength=n).clamp_min(1)
    out = {}
    for name, g in grads.items():
        summed = g.new_zeros((n, *g.shape[1:])).index_add_(0, units, g)
        out[name] = summed / counts.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
    return out


def _write(module: nn.Module, grads: dict[str, Tensor], *, scale: float) -> None:
    for name, p in module.named_parameters():
        if name in grads:
            p.grad = (scale * grads[name]).to(p.dtype)
